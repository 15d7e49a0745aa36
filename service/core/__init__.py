"""What every route and stage relies on: configuration (`config`), the one error shape
(`errors`), access control (`security`), and limits against bad input and overload (`limits`,
with `image_headers`)."""
