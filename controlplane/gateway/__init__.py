"""The agent gateway: the sandbox's only door to the control plane (architecture/runs.md).
It serves the SDK's run protocol (architecture/gateway-protocol.md) on its own port."""
