"""Tokenizers built from a GGUF file's metadata, chat templates and a streaming detokenizer.

Usage::

    tok = Tokenizer.from_gguf("model.gguf")
    ids = tok.encode("Hello world")  # with BOS if the model asks for it
    text = tok.decode(ids)  # "Hello world"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    ids = tok.encode(prompt, add_special=False, parse_special=True)
"""

from typing import TYPE_CHECKING, Any

from edgelm.tokenizer.detokenizer import StreamingDetokenizer
from edgelm.tokenizer.tokenizer import Tokenizer
from edgelm.tokenizer.vocab import SpecialIds, TokenAttr, TokenType, Vocab, VocabType

if TYPE_CHECKING:
    from edgelm.tokenizer.chat_template import ChatTemplate, ChatTemplateError, ChatTemplateWarning

# Chat templates need jinja2; it is imported on first use, so a process that only completes raw
# prompts (a device driven by token ids, a benchmark) does not carry it.
_CHAT_TEMPLATE_NAMES = ("ChatTemplate", "ChatTemplateError", "ChatTemplateWarning")


def __getattr__(name: str) -> Any:
    if name in _CHAT_TEMPLATE_NAMES:
        from edgelm.tokenizer import chat_template

        return getattr(chat_template, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ChatTemplate",
    "ChatTemplateError",
    "ChatTemplateWarning",
    "SpecialIds",
    "StreamingDetokenizer",
    "TokenAttr",
    "TokenType",
    "Tokenizer",
    "Vocab",
    "VocabType",
]
