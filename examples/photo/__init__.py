"""Photo check demo: small digit images and an ONNX classifier."""
