"""`sluice worker`: the program that serves one ONNX model to the gateway, and what it
needs: loading the model (`OnnxModel`), the embedded demo model, and joining a gateway's
pool by itself (`Membership`). The gateway never imports this to serve; it starts it
as a process (`python -m backends.worker`)."""
