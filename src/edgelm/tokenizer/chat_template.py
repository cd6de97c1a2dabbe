"""Chat templates: the Jinja program in a GGUF file that turns messages into a prompt.

Templates come with model files and are untrusted, so they run in Jinja's immutable sandbox (no
attribute access to internals, no mutation of the inputs, bounded `range`). The environment offers
what the Hugging Face `apply_chat_template` offers and real templates use: `messages`, `tools`,
`add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, `strftime_now`, a `tojson`
filter with Hugging Face's output (no HTML escaping, keys in insertion order) and the
`{% generation %}` tag. Any failure is a `ChatTemplateError` that says what went wrong and where.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgelm.errors import EdgelmError
from edgelm.gguf.reader import GGUFFile
from edgelm.tokenizer.detokenizer import Pieces
from edgelm.tokenizer.vocab import Vocab

if TYPE_CHECKING:
    from edgelm.tokenizer.tokenizer import Tokenizer

__all__ = ["CHATML_TEMPLATE", "ChatTemplate", "ChatTemplateError", "ChatTemplateWarning"]

CHAT_TEMPLATE_KEY: Final = "tokenizer.chat_template"
NAMED_CHAT_TEMPLATE_KEY: Final = "tokenizer.chat_template.{name}"

# The fallback for files without a template.
CHATML_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(EdgelmError, ValueError):
    """A chat template that does not compile or fails while rendering (or rejects the messages)."""


class ChatTemplateWarning(UserWarning):
    """The model file has no chat template; a default one is used."""


class _TemplateRaised(Exception):
    """`raise_exception(...)` called by the template itself."""


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` marks assistant text for training; it renders as is."""

    tags = {"generation"}  # noqa: RUF012  (jinja's declared interface)

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template with the special-token strings it renders with."""

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        name: str = "chat template",
        extra_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.extra_tokens = dict(extra_tokens or {})
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"{name} does not compile: line {e.lineno}: {e.message}") from None
        except Exception as e:  # any failure of an untrusted template is its fault
            raise ChatTemplateError(f"{name} does not compile: {type(e).__name__}: {e}") from None

    @classmethod
    def default(cls, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
        """ChatML, the fallback for files without a template."""
        return cls(CHATML_TEMPLATE, bos_token, eos_token, name="default ChatML template")

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, object],
        bos_token: str = "",
        eos_token: str = "",
        name: str | None = None,
    ) -> ChatTemplate:
        """The template in GGUF metadata (`tokenizer.chat_template`, or the one called `name`).

        Without one, ChatML is used and a `ChatTemplateWarning` issued.
        """
        key = CHAT_TEMPLATE_KEY if name is None else NAMED_CHAT_TEMPLATE_KEY.format(name=name)
        source = metadata.get(key)
        if source is None:
            warnings.warn(
                f"the model file has no {key!r}; using the default ChatML template",
                ChatTemplateWarning,
                stacklevel=2,
            )
            return cls.default(bos_token, eos_token)
        if not isinstance(source, str):
            raise ChatTemplateError(f"metadata key {key!r} is not a string")
        return cls(source, bos_token, eos_token, name=f"chat template {key!r}")

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str], name: str | None = None) -> ChatTemplate:
        """The template of a GGUF file (or the one called `name`), with its BOS/EOS texts."""
        gguf = GGUFFile.open(path)
        return cls.from_vocab(Vocab.from_metadata(gguf.metadata, gguf.path), name)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, name: str | None = None) -> ChatTemplate:
        """The template of the tokenizer's file (or the one called `name`), with its BOS/EOS texts."""
        return cls.from_vocab(tokenizer.vocab, name)

    @classmethod
    def from_vocab(cls, vocab: Vocab, name: str | None = None) -> ChatTemplate:
        """The template kept in `vocab` (or the one called `name`), with its special-token texts."""
        pieces = Pieces(vocab)

        def text(token_id: int | None) -> str:
            return "" if token_id is None else pieces.piece(token_id, special=True).decode("utf-8", "replace")

        special = vocab.special
        template = cls.from_metadata(vocab.chat_templates, text(special.bos), text(special.eos), name)
        extra = {"unk_token": text(special.unk), "pad_token": text(special.pad)}
        template.extra_tokens.update({k: v for k, v in extra.items() if v})
        return template

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The prompt for `messages` (and `tools`); `kwargs` are passed on to the template."""
        variables: dict[str, Any] = {
            **self.extra_tokens,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            **kwargs,
            "messages": list(messages),
            "add_generation_prompt": add_generation_prompt,
            "tools": None if tools is None else list(tools),
        }
        try:
            return self._template.render(**variables)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"{self.name} rejected the messages: {e}") from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"{self.name} failed: {type(e).__name__}: {e}") from None
        except RecursionError:
            raise ChatTemplateError(f"{self.name} failed: recursion too deep") from None
        except Exception as e:  # any failure of an untrusted template is its fault
            raise ChatTemplateError(f"{self.name} failed: {type(e).__name__}: {e}") from None

    def __repr__(self) -> str:
        return f"ChatTemplate({self.name}, {len(self.source)} chars)"
