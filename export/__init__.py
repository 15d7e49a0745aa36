"""Export trained checkpoints to ONNX (+ manifest) and build TensorRT engines."""
