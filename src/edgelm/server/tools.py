"""Structured output: `response_format` and `tools` as a grammar over the model's tokens, and tool calls
read back from the generated text.

How `tool_choice` is honoured (tools given):

- `"required"`, or a named function: the output is *forced* by a JSON-schema grammar to be one call,
  `{"name": <a tool name>, "arguments": <that tool's parameters>}` (`anyOf` over the tools); the reply
  carries it as `tool_calls` with finish_reason "tool_calls".
- `"auto"` (the default with tools): the model decides, unconstrained, as OpenAI's models do. If its whole
  answer is a call (that same JSON object, or the Hermes/Qwen convention of one or more
  `<tool_call>{...}</tool_call>` blocks) naming a given tool, it is returned as `tool_calls`; otherwise as
  text. Forcing a call on "auto" would take the choice away from the model; a grammar that allows both
  text and a call would need the model's own tool-call syntax, which differs between model families.
- `"none"`: no tool call is read back and the template is not shown the tools.

With a forced call or `response_format`, the grammar ends the output with the end-of-generation token;
an output cut by max_tokens is returned as text with finish_reason "length".
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edgelm.server.errors import APIError
from edgelm.server.schemas import ChatCompletionRequest, Tool
from edgelm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from edgelm.runtime.grammar import Grammar

__all__ = [
    "OutputPlan",
    "ToolCall",
    "could_be_tool_call",
    "parse_tool_calls",
    "plan_output",
    "tool_call_schema",
]

ToolMode = Literal["none", "auto", "forced"]

_TAG_OPEN, _TAG_CLOSE = "<tool_call>", "</tool_call>"
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
# A function without `parameters` takes none.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class OutputPlan:
    """What constrains the output of one chat request and how its text is read back."""

    grammar: Grammar | None = None  # the output must follow it (a processor per request)
    tool_mode: ToolMode = "none"
    tool_names: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def to_json(self, index: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {} if index is None else {"index": index}
        out |= {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        return out


def tool_call_schema(tools: Sequence[Tool]) -> dict[str, Any]:
    """The JSON schema of one call of any of `tools`."""
    branches = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t.function.name},
                "arguments": t.function.parameters or _NO_PARAMETERS,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _grammar_available() -> bool:
    try:
        import edgelm.runtime.grammar  # noqa: F401  (needs llguidance, an optional dependency)
    except ImportError:
        return False
    return True


def _grammar(schema: dict[str, Any] | None, tokenizer: Tokenizer, param: str) -> Grammar:
    """The JSON grammar of `schema` (None: any object); 400 naming `param` if it is not a usable schema."""
    try:
        from edgelm.runtime.grammar import Grammar, GrammarError
    except ImportError as e:
        raise APIError(
            400,
            f"structured output is not available on this server ({e}); install edgelm[server]",
            param=param,
            code="unsupported_value",
        ) from None
    try:
        return Grammar.json_schema(schema, tokenizer, field=param)
    except GrammarError as e:
        raise APIError(400, f"invalid JSON schema: {e}", param=e.field, code="invalid_schema") from None


def _forced_tools(body: ChatCompletionRequest) -> list[Tool]:
    """The tools a forced call may name: all for "required", the named one for a named choice."""
    assert body.tools
    choice = body.tool_choice
    if choice == "required":
        return list(body.tools)
    assert choice is not None and not isinstance(choice, str)
    named = [t for t in body.tools if t.function.name == choice.function.name]
    if not named:
        known = ", ".join(repr(t.function.name) for t in body.tools)
        raise APIError(
            400,
            f"tool_choice names function {choice.function.name!r}, which is not among the tools ({known})",
            param="tool_choice",
            code="invalid_value",
        )
    return named


def _tools_grammar(tools: list[Tool], tokenizer: Tokenizer) -> Grammar:
    try:
        return _grammar(tool_call_schema(tools), tokenizer, "tools")
    except APIError as e:
        if e.code != "invalid_schema":
            raise
        # Name the tool at fault: try them one by one (only on this error path).
        for i, t in enumerate(tools):
            _grammar(t.function.parameters or _NO_PARAMETERS, tokenizer, f"tools[{i}].function.parameters")
        raise


def plan_output(body: ChatCompletionRequest, tokenizer: Tokenizer) -> OutputPlan:
    """The grammar and tool-call handling `body` asks for; 400 naming the field when it cannot be had."""
    choice = body.tool_choice
    if not body.tools:
        if choice is not None and choice not in ("none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice", code="invalid_value")
        mode: ToolMode = "none"
    elif choice is None or choice == "auto":
        mode = "auto"
    elif choice == "none":
        mode = "none"
    else:
        mode = "forced"
    if len({t.function.name for t in body.tools or ()}) != len(body.tools or ()):
        raise APIError(400, "tool names must be unique", param="tools", code="invalid_value")
    names = frozenset(t.function.name for t in body.tools or ())
    if mode == "forced":
        return OutputPlan(_tools_grammar(_forced_tools(body), tokenizer), "forced", names)
    if body.tools and _grammar_available():
        _tools_grammar(list(body.tools), tokenizer)  # ~1 ms: bad parameter schemas are refused in any mode
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return OutputPlan(None, mode, names)
    if fmt.type == "json_object":
        schema, param = None, "response_format"
    else:
        if fmt.json_schema is None:
            raise APIError(
                400, "response_format of type json_schema needs json_schema", param="response_format"
            )
        schema, param = fmt.json_schema.schema_, "response_format.json_schema.schema"
    # A grammar shapes the whole output: tool calls are not read back from it.
    return OutputPlan(_grammar(schema, tokenizer, param), "none", names)


def _call(obj: Any, names: frozenset[str]) -> ToolCall | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the JSON text itself
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(obj["name"], json.dumps(arguments, ensure_ascii=False))


def parse_tool_calls(text: str, names: frozenset[str]) -> list[ToolCall] | None:
    """The calls `text` consists of, or None when it is (also) something else."""
    s = text.strip()
    if s.startswith(_TAG_OPEN):
        blocks = _TAGGED.findall(s)
        if not blocks or _TAGGED.sub("", s).strip():
            return None
    elif s.startswith("{"):
        blocks = [s]
    else:
        return None
    calls = []
    for block in blocks:
        try:
            obj = json.loads(block)
        except ValueError:
            return None
        call = _call(obj, names)
        if call is None:
            return None
        calls.append(call)
    return calls


def could_be_tool_call(text: str) -> bool:
    """Whether `text` (the output so far) may still turn out to be a tool call: a stream holds it back."""
    s = text.lstrip()
    return not s or s.startswith(("{", _TAG_OPEN)) or _TAG_OPEN.startswith(s)
