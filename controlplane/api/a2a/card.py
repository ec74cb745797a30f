"""The A2A agent card of an Agent (A2A specification v1.0, `AgentCard`; architecture/a2a.md).

What it holds, and where each field comes from:
- `name`: the Agent's name; `description`: the annotation `a2a.agentos.io/description`, else
  `agentos.io/description`, else a sentence naming the agent and its tenant;
- `version`: the annotation `a2a.agentos.io/version`, else the Agent's `generation`;
- `supportedInterfaces`: one, the JSON-RPC binding at `/a2a/{tenant}/{agent}`, version 1.0;
- `capabilities`: streaming and push notifications;
- `securitySchemes` / `securityRequirements`: HTTP bearer, our API tokens;
- `skills`: the annotation `a2a.agentos.io/skills` (a JSON list of AgentSkill objects) when
  it is valid, else one skill named after the agent, tagged with its labels' values. The SDK
  declares tools, not skills, so nothing more can be derived yet.
"""

from __future__ import annotations

import json
from typing import Any

from controlplane.domain.records import AgentRecord

PROTOCOL_VERSION = "1.0"
BINDING = "JSONRPC"
SECURITY_SCHEME = "bearerToken"
DESCRIPTION = "a2a.agentos.io/description"
VERSION = "a2a.agentos.io/version"
SKILLS = "a2a.agentos.io/skills"
MODES = ["application/json", "text/plain"]
_SKILL_FIELDS = {"id", "name", "description", "tags", "examples", "inputModes", "outputModes"}


def _declared_skills(agent: AgentRecord) -> list[dict[str, Any]] | None:
    """The skills of the annotation, or None when it is absent or not a list of objects with
    string `id`, `name` and `description` (a bad annotation falls back, it does not break
    the card)."""
    raw = agent.annotations.get(SKILLS)
    if raw is None:
        return None
    try:
        skills = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(skills, list):
        return None
    out = []
    for skill in skills:
        if not isinstance(skill, dict):
            return None
        if not all(isinstance(skill.get(k), str) for k in ("id", "name", "description")):
            return None
        out.append({k: v for k, v in skill.items() if k in _SKILL_FIELDS})
        out[-1].setdefault("tags", [])
    return out


def _description(agent: AgentRecord) -> str:
    return (
        agent.annotations.get(DESCRIPTION)
        or agent.annotations.get("agentos.io/description")
        or f"Agent {agent.name!r} of tenant {agent.tenant!r} on Agent OS: each message is a run."
    )


def agent_card(agent: AgentRecord, url: str) -> dict[str, Any]:
    """The AgentCard (ProtoJSON, camelCase) of `agent`, reachable at `url` (the absolute URL
    of `/a2a/{tenant}/{agent}`)."""
    skills = _declared_skills(agent) or [
        {
            "id": agent.name,
            "name": agent.name,
            "description": _description(agent),
            "tags": sorted(set(agent.labels.values())) or ["agentos"],
        }
    ]
    return {
        "name": agent.name,
        "description": _description(agent),
        "supportedInterfaces": [
            {"url": url, "protocolBinding": BINDING, "protocolVersion": PROTOCOL_VERSION}
        ],
        "provider": {"organization": "Agent OS", "url": url},
        "version": agent.annotations.get(VERSION) or str(agent.generation),
        "capabilities": {"streaming": True, "pushNotifications": True},
        "securitySchemes": {
            SECURITY_SCHEME: {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "description": "An Agent OS API token (`agentos token create`): viewer "
                    "reads tasks, editor sends messages and cancels.",
                }
            }
        },
        "securityRequirements": [{"schemes": {SECURITY_SCHEME: {"list": []}}}],
        "defaultInputModes": MODES,
        "defaultOutputModes": MODES,
        "skills": skills,
    }
