"""Machine learning on the device: the native feature operators (C, native/ops/, through cffi),
ONNX Runtime model sessions and the device profile that configures them."""
