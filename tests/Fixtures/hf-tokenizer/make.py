#!/usr/bin/python3
"""Reference fixture for reading a Hugging Face tokenizer.json of the byte-level BPE kind (tests "research.hf tokenizer").

Written independently of the C# reader and of Microsoft.ML.Tokenizers (no shared code): a byte-level BPE as GPT-2's
encoder.py defines it (Radford et al. 2019; github.com/openai/gpt-2 src/encoder.py) — bytes_to_unicode, the
pre-tokenizer regex, the merge loop by rank — and Hugging Face's added-token splitting.

It (a) learns MERGES merges on the English fortune entries and writes them in Hugging Face's tokenizer.json schema, and
(b) transcribes the ids of EVERY English fortune entry under two pre-tokenizers that share the vocabulary:

  tokenizer.json        pre_tokenizer ByteLevel(use_regex=true): GPT-2's regex (GPT-2, GPT-J, Phi, ...)
  tokenizer-split.json  pre_tokenizer Sequence[Split(Llama 3's regex, Isolated), ByteLevel(use_regex=false)]: the form
                        Llama 3 and Qwen2 ship, with Qwen2's NFC normalizer
  tokenizer_config.json bos/eos/pad names, as transformers writes them beside tokenizer.json
  fortunes-en.ids.gz    one line per entry, in the corpus's order: the first 12 hex digits of the SHA-256 of the entry's
                        UTF-8 text (the test checks it reads the same entry), a TAB, the ids under tokenizer.json
  fortunes-en-split.sha.gz  one line per entry, in the same order: the first 12 hex digits of the
                        SHA-256 of the entry's ids under tokenizer-split.json written as in fortunes-en.ids.gz (decimal,
                        one space between): a transcription by digest, since writing out a second million ids would
                        pass the fixture's 2 MB budget

The entries are Research.Core.Text.Fortunes.English()'s: every plain file of /usr/share/games/fortunes (no subfolders,
no .dat, .u8 links read once, ascii-art dropped), split on lines that are exactly "%", cleaned as TextCleaning.Clean
(CRLF -> LF, backspace overstrikes resolved, ASCII controls but LF/TAB removed, NFC, trailing whitespace and leading
blank lines removed), empty and repeated entries dropped, files in ordinal order of their topic.

Python's `re` lacks \\p{L} and \\p{N}, and Debian's python3-regex is not installed here, so the patterns are run with
`re` through a hand translation (`classes`): \\p{L} and \\p{N} become character classes built from unicodedata's
general categories (L*, N*) over every code point, and \\s / \\S the Unicode White_Space set that .NET's and Oniguruma's
\\s match (Python's own \\s also matches U+001C-U+001F, which the cleaning has removed). Python 3.11's unicodedata is
Unicode 14; a letter assigned later would be classed differently, and the test would say so on that entry.
Run from this folder: `/usr/bin/python3 make.py`. Deterministic (training ties: the lexicographically smaller pair).
"""
import gzip
import hashlib
import heapq
import json
import os
import sys
import unicodedata

import re

MERGES = 2000
FORTUNES = "/usr/share/games/fortunes"
DROPPED = {"ascii-art"}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]



def classes():
    """\\p{L}, \\p{N} and \\s as the contents of a `re` character class (ranges of code points)."""
    def ranges(pred):
        out, start = [], None
        for cp in range(0x110000 + 1):
            inside = cp < 0x110000 and pred(chr(cp))
            if inside and start is None:
                start = cp
            elif not inside and start is not None:
                out.append(re.escape(chr(start)) + ("" if cp - 1 == start else "-" + re.escape(chr(cp - 1))))
                start = None
        return "".join(out)
    letter = ranges(lambda c: unicodedata.category(c).startswith("L"))
    number = ranges(lambda c: unicodedata.category(c).startswith("N"))
    space = "\\t\\n\\x0b\\x0c\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
    return letter, number, space


L, N, S = classes()

# GPT-2's pre-tokenizer (encoder.py; Hugging Face's ByteLevel with use_regex=true).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's Split pattern (its tokenizer.json; Qwen2's differs only in \p{N} instead of \p{N}{1,3}).
LLAMA3_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# The same two patterns for `re`, term by term.
GPT2_RE = re.compile(rf"""'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+""")
LLAMA3_RE = re.compile(rf"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n{L}{N}]?[{L}]+|[{N}]{{1,3}}| ?[^{S}{L}{N}]+[\r\n]*|[{S}]*[\r\n]+|[{S}]+(?![^{S}])|[{S}]+""")


def bytes_to_unicode():
    """GPT-2's table: each byte a printable character; the 188 printable Latin-1 bytes stand for themselves, the other
    68 (controls, space, ...) are shifted to 256 + n in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = bytes_to_unicode()

# ---------------------------------------------------------------- the corpus, as Fortunes.English() reads it

# C#'s char.IsWhiteSpace (String.TrimEnd): Unicode Zs, Zl, Zp, TAB..CR, U+0085, U+00A0.
def cs_whitespace(c):
    return c in "\t\n\x0b\x0c\r\x85\xa0" or unicodedata.category(c) in ("Zs", "Zl", "Zp")


ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303", ",": "\u0327"}


def accented(mark, letter):
    if mark not in ACCENTS or not letter.isalpha():
        return None
    composed = unicodedata.normalize("NFC", letter + ACCENTS[mark])
    return composed if len(composed) == 1 else None


def overstrike(under, over):
    if under == over or over == "_":
        return under
    if under == "_":
        return over
    a = accented(under, over)
    if a is not None:
        return a
    b = accented(over, under)
    if b is not None:
        return b
    return over


def resolve_overstrikes(text):
    if "\b" not in text:
        return text
    out = []
    for line in text.split("\n"):
        cells, pos = [], 0
        for ch in line:
            if ch == "\b":
                if pos > 0:
                    pos -= 1
                continue
            if pos < len(cells):
                cells[pos] = overstrike(cells[pos], ch)
            else:
                cells.append(ch)
            pos += 1
        out.append("".join(cells))
    return "\n".join(out)


LEADING_BLANK = re.compile(r"\A(?:[ \t]*\n)+")


def clean(entry):
    text = resolve_overstrikes(entry.replace("\r\n", "\n"))
    text = "".join(c for c in text if c in "\n\t" or (c >= " " and c != "\x7f"))
    text = unicodedata.normalize("NFC", text)
    end = len(text)
    while end > 0 and cs_whitespace(text[end - 1]):
        end -= 1
    return LEADING_BLANK.sub("", text[:end], count=1)


def split_entries(text):
    entries, current, any_line = [], [], False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == "%":
            entries.append("\n".join(current))
            current, any_line = [], False
            continue
        current.append(line)
        any_line = True
    if current and "\n".join(current):
        entries.append("\n".join(current))
    return entries


def topic_files(directory):
    by_target = {}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isdir(path) or name.endswith(".dat"):
            continue
        is_link = os.path.islink(path)
        topic = name[:-3] if is_link and name.endswith(".u8") else name
        target = os.path.realpath(path)
        known = by_target.get(target)
        if known is None or (known[2] and not is_link) or (known[2] == is_link and topic < known[0]):
            by_target[target] = (topic, path, is_link)
    return sorted(((t, p) for t, p, _ in by_target.values()), key=lambda f: (f[0].encode("utf-16-be"), f[1]))


def english_entries():
    entries, seen = [], set()
    for topic, path in topic_files(FORTUNES):
        if topic in DROPPED:
            continue
        with open(path, "rb") as f:
            raw = f.read().decode("utf-8")
        if raw.startswith("\ufeff"):
            raw = raw[1:]
        for entry in split_entries(raw):
            text = clean(entry)
            if text and text not in seen:
                seen.add(text)
                entries.append(text)
    return entries

# ---------------------------------------------------------------- byte-level BPE


def pretokenize(pattern, text):
    return [("".join(BYTE_CHAR[b] for b in w.encode("utf-8"))) for w in pattern.findall(text)]


def learn_merges(entries, count):
    """Sennrich et al. (2016)'s BPE learning over pre-tokenized words: repeatedly merge the most frequent adjacent pair
    (ties: the lexicographically smaller pair), with the pair counts updated only in the words a merge touches."""
    freq = {}
    for e in entries:
        for w in pretokenize(GPT2_RE, e):
            freq[w] = freq.get(w, 0) + 1
    words = [list(w) for w in freq]
    counts = list(freq.values())
    pairs, where = {}, {}
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] = pairs.get(p, 0) + counts[i]
            where.setdefault(p, set()).add(i)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < count and heap:
        c, p = heapq.heappop(heap)
        if pairs.get(p, 0) != -c or c == 0:
            continue  # stale entry
        merges.append(p)
        joined = p[0] + p[1]
        touched = {}
        for i in list(where.get(p, ())):
            w = words[i]
            for q in zip(w, w[1:]):
                pairs[q] -= counts[i]
                touched[q] = True
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == p[0] and w[j + 1] == p[1]:
                    out.append(joined)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for q in zip(out, out[1:]):
                pairs[q] = pairs.get(q, 0) + counts[i]
                where.setdefault(q, set()).add(i)
                touched[q] = True
        for q in touched:
            if pairs.get(q, 0) > 0:
                heapq.heappush(heap, (-pairs[q], q))
    return merges


def bpe(word, ranks, cache):
    """GPT-2's encoder.py bpe(): merge the adjacent pair of lowest rank, all its occurrences left to right, until none
    has a rank."""
    if word in cache:
        return cache[word]
    parts = list(word)
    while len(parts) > 1:
        best = min(zip(parts, parts[1:]), key=lambda q: ranks.get(q, float("inf")))
        if best not in ranks:
            break
        out, j = [], 0
        while j < len(parts):
            if j + 1 < len(parts) and parts[j] == best[0] and parts[j + 1] == best[1]:
                out.append(best[0] + best[1])
                j += 2
            else:
                out.append(parts[j])
                j += 1
        parts = out
    cache[word] = parts
    return parts


SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def encode(text, pattern, vocab, ranks, cache, nfc=False):
    """Hugging Face's order: added tokens split out first, then the normalizer, pre-tokenizer and model on each piece."""
    ids = []
    for k, piece in enumerate(SPECIAL_SPLIT.split(text)):
        if k % 2 == 1:
            ids.append(vocab[piece])
            continue
        if nfc:
            piece = unicodedata.normalize("NFC", piece)
        for w in pretokenize(pattern, piece):
            ids.extend(vocab[t] for t in bpe(w, ranks, cache))
    return ids


def tokenizer_json(vocab, merges, split):
    added = [dict(id=vocab[s], content=s, single_word=False, lstrip=False, rstrip=False, normalized=False, special=True) for s in SPECIALS]
    if split:
        pre = dict(type="Sequence", pretokenizers=[
            dict(type="Split", pattern=dict(Regex=LLAMA3_PATTERN), behavior="Isolated", invert=False),
            dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=False)])
        normalizer = dict(type="NFC")
    else:
        pre = dict(type="ByteLevel", add_prefix_space=False, trim_offsets=True, use_regex=True)
        normalizer = None
    return dict(
        version="1.0", truncation=None, padding=None, added_tokens=added, normalizer=normalizer, pre_tokenizer=pre,
        post_processor=dict(type="ByteLevel", add_prefix_space=True, trim_offsets=False, use_regex=True),
        decoder=dict(type="ByteLevel", add_prefix_space=True, trim_offsets=True, use_regex=True),
        model=dict(type="BPE", dropout=None, unk_token=None, continuing_subword_prefix=None, end_of_word_suffix=None,
                   fuse_unk=False, byte_fallback=False, ignore_merges=False,
                   vocab={k: v for k, v in vocab.items() if k not in SPECIALS},  # as Qwen2: added tokens only in added_tokens
                   merges=[[a, b] for a, b in merges]))


def write_json(name, obj):
    with open(name, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def main():
    entries = english_entries()
    merges = learn_merges(entries, MERGES)
    # Ids: the 256 byte characters in byte order, then the merges in rank order, then the added tokens.
    vocab = {BYTE_CHAR[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for s in SPECIALS:
        vocab[s] = len(vocab)
    ranks = {p: r for r, p in enumerate(merges)}
    write_json("tokenizer.json", tokenizer_json(vocab, merges, split=False))
    write_json("tokenizer-split.json", tokenizer_json(vocab, merges, split=True))
    write_json("tokenizer_config.json", dict(bos_token=None, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                             add_bos_token=False, add_eos_token=False, model_max_length=1024,
                                             tokenizer_class="GPT2Tokenizer"))
    cache, cache_split = {}, {}
    tokens, differing, split_lines = 0, [], []
    with gzip.GzipFile("fortunes-en.ids.gz", "wb", compresslevel=9, mtime=0) as out:
        for i, e in enumerate(entries):
            ids = encode(e, GPT2_RE, vocab, ranks, cache)
            tokens += len(ids)
            digest = hashlib.sha256(e.encode("utf-8")).hexdigest()[:12]
            out.write(f"{digest}\t{' '.join(map(str, ids))}\n".encode("ascii"))
            split_ids = encode(e, LLAMA3_RE, vocab, ranks, cache_split, nfc=True)
            if split_ids != ids:
                differing.append(i)
            split_lines.append(f"{hashlib.sha256(' '.join(map(str, split_ids)).encode('ascii')).hexdigest()[:12]}\n")
    with gzip.GzipFile("fortunes-en-split.sha.gz", "wb", compresslevel=9, mtime=0) as out:
        out.write("".join(split_lines).encode("ascii"))
    print(f"{len(entries)} entries, {tokens} tokens, vocabulary {len(vocab)} ({MERGES} merges); "
          f"{len(differing)} entries differ under the split pre-tokenizer", file=sys.stderr)


if __name__ == "__main__":
    main()
