"""An offline CLIP tokenizer over a small word list (no hub download, no 1.5 MB BPE file).

It is a real `transformers.CLIPTokenizer` (byte-level BPE, `</w>` word ends), so a pipeline saved with it loads
with stock `from_pretrained`. Every word of the list gets merges that build it from its letters; words outside the
list still tokenize, letter by letter.
"""

from __future__ import annotations

import string

from transformers import CLIPTokenizer

SPECIAL = ("<|startoftext|>", "<|endoftext|>")
BASIC_WORDS = (
    "a an the of and with on in at sticker style white border photo image picture drawing of one two three"
).split()


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that turn the letters of `word` into the single token `word</w>`."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges, left = [], pieces[0]
    for right in pieces[1:]:
        merges.append((left, right))
        left = left + right
    return merges


def build_word_tokenizer(words, model_max_length: int = 77) -> CLIPTokenizer:
    alphabet = string.ascii_lowercase + string.digits + string.punctuation
    vocab: dict[str, int] = {}
    for token in [*SPECIAL, *alphabet, *(c + "</w>" for c in alphabet)]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    seen = set()
    # Longest words first: BPE applies the lowest-ranked merge present, so a short word's merge (say "an") ranked
    # before a long word's chain would split the long word ("tri an g l e") into several tokens.
    chosen = {w.lower() for w in [*BASIC_WORDS, *words] if w.isalpha() and len(w) > 1}
    for word in sorted(chosen, key=lambda w: (-len(w), w)):
        for left, right in _word_merges(word):
            if (left, right) not in seen:
                seen.add((left, right))
                merges.append((left, right))
                vocab.setdefault(left + right, len(vocab))
    # model_max_length must be set by hand: the default is a huge int that breaks padding="max_length".
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
