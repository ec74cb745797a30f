"""The Agent2Agent (A2A) protocol front of every agent: `/a2a/{tenant}/{agent}`
(architecture/a2a.md)."""
