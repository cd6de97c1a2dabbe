"""Chat templates: the Jinja program in a GGUF file that turns messages into a prompt.

Templates come with model files and are untrusted, so they run in Jinja's immutable sandbox (no
attribute access to internals, no mutation of the inputs, bounded `range`), and a rendering is bounded
in time, loop steps and size (RENDER_SECONDS, RENDER_STEPS, RENDER_BYTES). The environment offers
what the Hugging Face `apply_chat_template` offers and real templates use: `messages`, `tools`,
`add_generation_prompt`, `bos_token`, `eos_token`, `raise_exception`, `strftime_now`, a `tojson`
filter with Hugging Face's output (no HTML escaping, keys in insertion order) and the
`{% generation %}` tag. Any failure is a `ChatTemplateError` that says what went wrong and where.
"""

from __future__ import annotations

import contextvars
import json
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.runtime
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

from edgelm.errors import EdgelmError
from edgelm.gguf.reader import GGUFFile
from edgelm.tokenizer.detokenizer import Pieces
from edgelm.tokenizer.vocab import Vocab

if TYPE_CHECKING:
    from edgelm.tokenizer.tokenizer import Tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "ChatTemplate",
    "ChatTemplateBoundError",
    "ChatTemplateError",
    "ChatTemplateWarning",
]

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


class ChatTemplateBoundError(ChatTemplateError):
    """A rendering that ran past its bound in time, loop steps or size: the template is at fault."""


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


# What one rendering may take: real templates render in about a millisecond and a few KB.
RENDER_SECONDS: Final = 2.0
RENDER_STEPS: Final = 2_000_000  # `range` items and output pieces, over the whole rendering
RENDER_BYTES: Final = 16 << 20  # the prompt, and any string or list a `*` makes


class _OverBudget(Exception):
    """A rendering that ran past its time, step or size bound."""


class _Budget:
    """The bound of one rendering: a deadline and counts, checked as the template steps."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + RENDER_SECONDS
        self.steps = 0

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > RENDER_STEPS:
            raise _OverBudget(f"more than {RENDER_STEPS} loop steps")
        if (self.steps & 1023) < n and time.monotonic() > self.deadline:
            raise _OverBudget(f"longer than {RENDER_SECONDS:g} s")


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("chat_template_budget", default=None)


def _tick(n: int = 1) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step(n)


def _counted(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        _tick()
        yield item


def _range(*args: int) -> Iterator[int]:
    """The sandbox's bounded `range`, each item counted against the rendering's budget."""
    return _counted(safe_range(*args))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with `*` and `**` bounded in the size of what they make."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(right) > 64 and abs(left) > 1:
                raise _OverBudget(f"{left} ** {right} is too large")
            return left**right
        for seq, n in ((left, right), (right, left)):
            sized = isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int)
            if sized and len(seq) * n > RENDER_BYTES:
                raise _OverBudget(f"a {type(seq).__name__} of {len(seq) * n} items")
        return left * right


def _environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = _range
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
        token = _BUDGET.set(_Budget())
        try:
            return self._bounded_render(variables)
        except _OverBudget as e:
            raise ChatTemplateBoundError(
                f"{self.name} exceeded the bound on rendering ({e}); the model's template is at fault"
            ) from None
        except _TemplateRaised as e:
            raise ChatTemplateError(f"{self.name} rejected the messages: {e}") from None
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"{self.name} failed: {type(e).__name__}: {e}") from None
        except RecursionError:
            raise ChatTemplateError(f"{self.name} failed: recursion too deep") from None
        except Exception as e:  # any failure of an untrusted template is its fault
            raise ChatTemplateError(f"{self.name} failed: {type(e).__name__}: {e}") from None
        finally:
            _BUDGET.reset(token)

    def _bounded_render(self, variables: dict[str, Any]) -> str:
        """The rendering, piece by piece: each piece counts, and the whole is bounded in bytes."""
        parts: list[str] = []
        size = 0
        for piece in self._template.generate(**variables):
            _tick()
            size += len(piece)
            if size > RENDER_BYTES:
                raise _OverBudget(f"a prompt over {RENDER_BYTES} characters")
            parts.append(piece)
        return "".join(parts)

    def check(self) -> None:
        """Refuse a template that cannot render a one-message conversation within the bound (a
        template that rejects that conversation is left to say so on real requests)."""
        try:
            self.render([{"role": "user", "content": "Hello"}])
        except ChatTemplateBoundError:
            raise
        except ChatTemplateError:
            pass  # it may accept the conversations it is given

    def __repr__(self) -> str:
        return f"ChatTemplate({self.name}, {len(self.source)} chars)"
