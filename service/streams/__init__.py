"""WebSocket streams: one connection's frames from arrival to reply.

`inbox`: the latest-frame-wins mailbox between the socket's receiver and the processing;
`pacing`: a stream's frame interval and pose times, and its pose lanes; `scheduler`: when the
next frame is taken and how it poses (a lane, or solo on every core) -- the one place a
stream's pose is scheduled; `session`: a frame's pose, tracking, classification and reply.
"""
