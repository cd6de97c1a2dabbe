"""Tokenizers built from a GGUF file's metadata, chat templates and a streaming detokenizer.

Usage::

    tok = Tokenizer.from_gguf("model.gguf")
    ids = tok.encode("Hello world")  # with BOS if the model asks for it
    text = tok.decode(ids)  # "Hello world"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    ids = tok.encode(prompt, add_special=False, parse_special=True)
"""

from edgelm.tokenizer.chat_template import ChatTemplate, ChatTemplateError, ChatTemplateWarning
from edgelm.tokenizer.detokenizer import StreamingDetokenizer
from edgelm.tokenizer.tokenizer import Tokenizer
from edgelm.tokenizer.vocab import SpecialIds, TokenAttr, TokenType, Vocab, VocabType

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
