"""Chat templates: real models' templates rendered as Hugging Face / llama-cpp-python do, in a sandbox."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from conftest import vocab_path
from edgelm.errors import EdgelmError
from edgelm.tokenizer import Tokenizer
from edgelm.tokenizer.chat_template import (
    CHATML_TEMPLATE,
    ChatTemplate,
    ChatTemplateError,
    ChatTemplateWarning,
)

TEMPLATES = Path(__file__).resolve().parent / "data" / "chat_templates"
TEMPLATE_NAMES = ("llama-3.2", "qwen2.5", "gemma-3", "smollm2")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather <now> & 'later' in Zürich",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]
USER_ONLY = [{"role": "user", "content": "Hi there"}]
WITH_SYSTEM = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi  "},
    {"role": "assistant", "content": " Hello!"},
    {"role": "user", "content": "2+2?"},
]
CONVERSATIONS = {"user": USER_ONLY, "system": WITH_SYSTEM}


def template_source(name: str) -> str:
    return (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")


# -- against llama-cpp-python's formatter (Hugging Face semantics) -------------------------------


@pytest.mark.llama_cpp
@pytest.mark.parametrize("name", TEMPLATE_NAMES)
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("with_tools", [False, True])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_matches_llama_cpp_python(
    name: str, conversation: str, with_tools: bool, add_generation_prompt: bool
) -> None:
    chat_format = pytest.importorskip("llama_cpp.llama_chat_format")
    source = template_source(name)
    messages = CONVERSATIONS[conversation]
    tools = TOOLS if with_tools else None
    reference = chat_format.Jinja2ChatFormatter(
        source, eos_token="</s>", bos_token="<s>", add_generation_prompt=add_generation_prompt
    )
    expected = reference(messages=messages, tools=tools, date_string="26 Jul 2024").prompt
    ours = ChatTemplate(source, bos_token="<s>", eos_token="</s>").render(
        messages, add_generation_prompt=add_generation_prompt, tools=tools, date_string="26 Jul 2024"
    )
    assert ours == expected


# -- independent renderings ----------------------------------------------------------------------


def test_qwen25_with_tools() -> None:
    tool_json = json.dumps(TOOLS[0], ensure_ascii=False)
    expected = (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f"{tool_json}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
        "<args-json-object>}\n</tool_call><|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ChatTemplate(template_source("qwen2.5")).render(USER_ONLY, tools=TOOLS) == expected
    assert "Zürich" in expected and "<now> & 'later'" in expected  # tojson neither escapes nor sorts


def test_qwen25_tool_call_round() -> None:
    messages = [
        *USER_ONLY,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
            ],
        },
        {"role": "tool", "content": '{"temp": 3}'},
    ]
    out = ChatTemplate(template_source("qwen2.5")).render(messages, tools=TOOLS)
    assert out.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n'
        "</tool_call>"
        '<|im_end|>\n<|im_start|>user\n<tool_response>\n{"temp": 3}\n</tool_response><|im_end|>\n'
        "<|im_start|>assistant\n"
    )


def test_llama32_with_system() -> None:
    out = ChatTemplate(template_source("llama-3.2"), bos_token="<|begin_of_text|>").render(
        WITH_SYSTEM, date_string="01 Jan 2025"
    )
    assert out == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama32_tools_use_indented_json_and_today() -> None:
    out = ChatTemplate(template_source("llama-3.2")).render(USER_ONLY, tools=TOOLS)
    assert json.dumps(TOOLS[0], indent=4, ensure_ascii=False) in out
    assert "Environment: ipython\n" in out and "Today Date: " in out  # strftime_now works


def test_gemma3_system_and_alternation() -> None:
    template = ChatTemplate(template_source("gemma-3"), bos_token="<bos>")
    assert template.render(WITH_SYSTEM) == (
        "<bos><start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_smollm2_default_system() -> None:
    out = ChatTemplate(template_source("smollm2")).render(USER_ONLY, add_generation_prompt=False)
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
    )


# -- templates from model files ------------------------------------------------------------------


def test_template_from_vocab_file() -> None:
    path = vocab_path("qwen2")
    if path is None:
        pytest.skip("vocab qwen2 not available")
    tok = Tokenizer.from_gguf(path)
    prompt = tok.apply_chat_template(USER_ONLY)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tok.encode(prompt, add_special=False, parse_special=True)
    assert ids.count(tok.token_to_id("<|im_start|>")) == 3
    assert tok.chat_template.bos_token == "<|endoftext|>"


def test_missing_template_falls_back_to_chatml() -> None:
    path = vocab_path("llama-spm")
    if path is None:
        pytest.skip("vocab llama-spm not available")
    tok = Tokenizer.from_gguf(path)
    with pytest.warns(ChatTemplateWarning, match="ChatML"):
        template = tok.chat_template
    assert template.source == CHATML_TEMPLATE
    assert (
        tok.apply_chat_template(USER_ONLY) == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tok.apply_chat_template(USER_ONLY)  # warned once, when the template was chosen


def test_named_template() -> None:
    md = {
        "tokenizer.chat_template": "default",
        "tokenizer.chat_template.tool_use": "tools {{ tools|length }}",
    }
    assert ChatTemplate.from_metadata(md, name="tool_use").render(USER_ONLY, tools=TOOLS) == "tools 1"


# -- environment and errors ----------------------------------------------------------------------


def test_environment() -> None:
    render = ChatTemplate(
        "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ '  a  ' | trim }}|{{ bos_token }}{{ eos_token }}"
        "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
        "|{% generation %}kept{% endgeneration %}|{{ strftime_now('%Y')|length }}",
        bos_token="<s>",
        eos_token="</s>",
    ).render
    out = render([], x={"b": "é<>&'", "a": [1, None, True]})
    assert out == (
        '{"b": "é<>&\'", "a": [1, null, true]}'
        '|{\n  "b": "é<>&\'",\n  "a": [\n    1,\n    null,\n    true\n  ]\n}'
        "|a|<s></s>01|kept|4"
    )


def test_trim_and_lstrip_blocks() -> None:
    source = "{% for m in messages %}\n  {% if true %}\n[{{ m.content }}]\n  {% endif %}\n{% endfor %}"
    assert ChatTemplate(source).render(USER_ONLY) == "[Hi there]\n"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% for m in messages %}{{ m }}", r"does not compile: line 1: .*endfor"),
        ("{{ 1 +* 2 }}", "does not compile: line 1"),
        ("{% if %}", "does not compile"),
        ("{{ raise_exception('bad roles') }}", "rejected the messages: bad roles"),
        ("{{ messages.__class__.__mro__ }}", "failed: (SecurityError|UndefinedError)"),
        ("{{ ''.__class__.__subclasses__() }}", "failed: (SecurityError|UndefinedError)"),
        ("{{ messages.append(1) }}", "failed: SecurityError"),
        ("{{ cycler.__init__.__globals__ }}", "failed"),
        ("{{ range(10**9) | list | length }}", "failed: OverflowError"),
        ("{{ messages[0].content.nope() }}", "failed: UndefinedError"),
        ("{{ 1 / 0 }}", "failed: ZeroDivisionError"),
        ("{{ undefined_thing.attr }}", "failed: UndefinedError"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "failed: recursion"),
    ],
)
def test_bad_templates(source: str, message: str) -> None:
    with pytest.raises(ChatTemplateError, match=message) as info:
        ChatTemplate(source, name="test template").render(USER_ONLY)
    assert isinstance(info.value, EdgelmError)
    assert "test template" in str(info.value)


def test_bad_metadata_template() -> None:
    with pytest.raises(ChatTemplateError, match="not a string"):
        ChatTemplate.from_metadata({"tokenizer.chat_template": 42})


def test_from_gguf() -> None:
    path = vocab_path("qwen2")
    if path is None:
        pytest.skip("vocab qwen2 not available")
    template = ChatTemplate.from_gguf(path)
    assert template.bos_token == template.eos_token == "<|endoftext|>"
    assert template.extra_tokens == {"pad_token": "<|endoftext|>"}
    assert template.render(USER_ONLY) == Tokenizer.from_gguf(path).apply_chat_template(USER_ONLY)


# -- bounds: a template from a model file cannot spin or grow without end ------------------------

HOSTILE = {
    "nested loops": "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}x",
    "nested loops with output": (
        "{% for a in range(99999) %}{% for b in range(99999) %}y{% endfor %}{% endfor %}"
    ),
    "a huge string": "{{ 'x' * 999999999 }}",
    "a huge number": "{{ 9 ** 99999999 }}",
    "a huge prompt": "{% for a in range(99999) %}{{ 'x' * 1000 }}{% endfor %}",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_rendering_is_bounded(name: str) -> None:
    import time

    from edgelm.tokenizer.chat_template import RENDER_SECONDS

    template = ChatTemplate(HOSTILE[name], name="chat template 'tokenizer.chat_template'")
    t0 = time.monotonic()
    with pytest.raises(
        ChatTemplateError, match=r"chat template 'tokenizer.chat_template' exceeded the bound"
    ):
        template.render([{"role": "user", "content": "hi"}])
    assert time.monotonic() - t0 < RENDER_SECONDS + 1.0
    with pytest.raises(ChatTemplateError, match="exceeded the bound"):
        template.check()


def test_check_leaves_a_template_that_rejects_messages_to_real_requests() -> None:
    template = ChatTemplate("{{ raise_exception('system message first') }}")
    template.check()  # not refused at load: it may accept the conversations it is given
    with pytest.raises(ChatTemplateError, match="rejected the messages"):
        template.render([{"role": "user", "content": "hi"}])
