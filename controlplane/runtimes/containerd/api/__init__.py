"""Python stubs for the subset of containerd's gRPC API (v1, containerd 1.6) Agent OS uses.

The `.proto` files in `proto/` are our own, written for this subset; package names, message
names and field numbers match containerd's wire API. The `*_pb2*.py[i]` modules are generated
by `make proto-containerd` (proto/generate.py) and checked in; do not edit them by hand.
"""
