"""The light runtime: numpy plus one interpreter (LiteRT or ONNX Runtime); never TensorFlow."""
