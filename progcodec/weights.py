"""The shipped weight file: safetensors (no code runs on load), with a content hash.

A weight file holds the run-time model: float networks (stored fp16), the integer scale network
(int8/int64), the coding tables (int32) and, as metadata, the model name and configuration.
Its identity in a .pic file is the name plus the first 8 bytes of the SHA-256 of the file.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load, save as st_save

from .model import ModelConfig, ProgressiveModel
from .tables import CodingTables

FORMAT = "progcodec-weights-1"
DEFAULT_MODEL = "progcodec-v33"
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"  # a source checkout


class WeightsError(Exception):
    pass


@dataclass
class LoadedModel:
    name: str
    digest: bytes  # 8 bytes: identity written into every .pic
    model: ProgressiveModel  # run-time form (integer scale net, tables attached)
    path: Path | None = None


TRAIN_PREFIX = "train."  # training-only tensors (z density, float scale net): for resuming
# Where progcodec.export puts those tensors: a file beside the weight file, named like it with
# this suffix (models/NAME.resume). Not "*.safetensors", so it is never taken for a model, and
# not package data: the codec never reads it, and the weight file stays 2 MB smaller.
TRAIN_SIDECAR_SUFFIX = ".resume"
TRAIN_FORMAT = "progcodec-train-tensors-1"


def save_weights(model: ProgressiveModel, name: str, path: Path,
                 train_extras: dict[str, torch.Tensor] | None = None) -> bytes:
    """Write the run-time model to `path`; returns its 8-byte digest.

    train_extras: training-only tensors stored under "train." (the codec ignores them), so that
    training can resume from a committed weight file without the optimizer checkpoint. The
    export puts them in a sidecar instead (save_training_tensors)."""
    extras = {TRAIN_PREFIX + k: v for k, v in (train_extras or {}).items()}
    meta = {"format": FORMAT, "name": name, "config": json.dumps(model.config.to_dict())}
    data = _write_safetensors({**model.state_dict(), **extras}, meta, Path(path))
    return hashlib.sha256(data).digest()[:8]


def _write_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> bytes:
    """Write tensors (floats stored fp16) and metadata to `path` through a temporary file, with
    the metadata keys in a fixed order (_metadata_in_key_order); returns the bytes written."""
    stored = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        stored[k] = v.half() if v.is_floating_point() else v
    data = _metadata_in_key_order(st_save(stored, metadata=meta))
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return data


def _metadata(data: bytes) -> dict:
    """The __metadata__ of a safetensors file's bytes (raises ValueError on a bad header)."""
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def _train_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training-only tensors among `tensors`, without their "train." prefix, as float32."""
    return {k[len(TRAIN_PREFIX):]: v.float() for k, v in tensors.items() if k.startswith(TRAIN_PREFIX)}


def training_sidecar(weights_path: Path) -> Path:
    """The file that holds the training-only tensors of the weight file at weights_path."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.stem + TRAIN_SIDECAR_SUFFIX)


def save_training_tensors(train_extras: dict[str, torch.Tensor], weights_path: Path,
                          digest: bytes) -> Path:
    """Write the training-only tensors of the weight file at weights_path (whose digest is
    `digest`) to its sidecar, stored as save_weights would have stored them inline (fp16)."""
    path = training_sidecar(weights_path)
    _write_safetensors({TRAIN_PREFIX + k: v for k, v in train_extras.items()},
                       {"format": TRAIN_FORMAT, "weights_digest": digest.hex()}, path)
    return path


def _metadata_in_key_order(data: bytes) -> bytes:
    """The same safetensors file with its metadata keys sorted. The library writes them in a
    per-process random order, so the bytes and digest of one export would vary from run to run.
    The header keeps its length (spaces pad it, as the format allows), so no offset moves."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header = {"__metadata__": dict(sorted(header.pop("__metadata__", {}).items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > n:  # cannot happen for the same content; keep the library's bytes
        return data
    return data[:8] + text.ljust(n, b" ") + data[8 + n:]


def load_weights_bytes(data: bytes, path: Path | None = None) -> LoadedModel:
    try:
        tensors = st_load(data)
        meta = _metadata(data)
    except (SafetensorError, ValueError, json.JSONDecodeError) as e:
        raise WeightsError(f"not a progcodec weight file: {e}") from None
    if meta.get("format") != FORMAT:
        raise WeightsError(f"unsupported weight file format {meta.get('format')!r}")
    try:
        config = ModelConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError) as e:  # json errors are ValueErrors
        raise WeightsError(f"weight file with an unusable model configuration: {e}") from None
    model = ProgressiveModel(config, integer_scale=True)
    counts = [tensors.get(f"tables.{k}") for k in ("z_counts", "y_counts")]
    if any(t is None or t.dim() != 2 for t in counts):
        raise WeightsError("weight file without its coding tables")
    model.tables = CodingTables(*counts[0].shape, *counts[1].shape,
                                y_channels=config.M if "tables.order_rank" in tensors else 0,
                                refine_table="tables.refine_counts" in tensors)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()
             if not k.startswith(TRAIN_PREFIX)}
    try:  # strict: every tensor the configuration needs, of its shape, and no other
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # torch's message: a title line, then one line per problem
        lines = str(e).strip().splitlines()
        raise WeightsError("weight file does not match its configuration: "
                           f"{lines[min(1, len(lines) - 1)].strip()[:200]}") from None
    model.eval()
    return LoadedModel(meta["name"], hashlib.sha256(data).digest()[:8], model, path)


def _model_dirs() -> list[Path]:
    """Where shipped weights live: installed package data first, then a source checkout."""
    dirs = []
    try:
        from importlib.resources import files
        dirs.append(Path(str(files("progcodec.models"))))
    except (ModuleNotFoundError, TypeError):
        pass
    dirs.append(MODELS_DIR)
    return dirs


def shipped_model_names() -> list[str]:
    """Names of every shipped model (the ones `load_model` finds by name), sorted."""
    return sorted({p.stem for d in _model_dirs() if d.is_dir() for p in d.glob("*.safetensors")})


def find_model_file(name: str) -> Path:
    """The weight file of a shipped model: installed package data, or a source checkout."""
    candidates = [d / f"{name}.safetensors" for d in _model_dirs()]
    for c in candidates:
        if c.is_file():
            return c
    raise WeightsError(f"model {name!r} not found (looked in {', '.join(map(str, candidates))})")


_cache: dict[str, LoadedModel] = {}


def load_shipped_model(name: str) -> LoadedModel:
    """Load a shipped model by a name read from a file header (untrusted): a plain name only,
    never a path, so a forged header cannot make the decoder read an arbitrary file."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name.endswith(".safetensors"):
        raise WeightsError(f"the file names model {name!r}, which is not a shipped model name")
    return load_model(name)


_file_digests: dict[str, bytes] = {}


def shipped_model_for_digest(digest: bytes) -> str:
    """The name of the shipped model whose weight file has this 8-byte digest (a version 4
    header names its model by digest alone). The default model is tried first; each other file
    is hashed once per process."""
    for name in sorted(shipped_model_names(), key=lambda n: n != DEFAULT_MODEL):
        if name not in _file_digests:
            loaded = _cache.get(name)
            _file_digests[name] = (loaded.digest if loaded else
                                   hashlib.sha256(find_model_file(name).read_bytes()).digest()[:8])
        if _file_digests[name] == digest:
            return name
    raise WeightsError(f"the file was encoded with a model that is not shipped (weights digest "
                       f"{digest.hex()}): give its weight file with --model")


def load_model(name_or_path: str | Path = DEFAULT_MODEL) -> LoadedModel:
    """Load a shipped model by name, or a weight file by path (cached per process)."""
    key = str(name_or_path)
    if key not in _cache:
        p = Path(key)
        path = p if p.suffix == ".safetensors" else find_model_file(key)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise WeightsError(f"cannot read weights {path}: {e.strerror}") from None
        _cache[key] = load_weights_bytes(data, path)
    return _cache[key]


def training_state_from_weights(path: Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """State dict of the training-time model, rebuilt from a weight file and its training
    tensors: stored inline (weight files exported before the sidecar) or in its sidecar."""
    data = Path(path).read_bytes()
    tensors = st_load(data)
    meta = _metadata(data)
    state = {k: v.float() for k, v in tensors.items()
             if v.is_floating_point() and not k.startswith(("scale_net.", "tables.", TRAIN_PREFIX))}
    extras = _train_tensors(tensors)
    sidecar = training_sidecar(path)
    if not extras and sidecar.is_file():
        side = sidecar.read_bytes()
        side_meta = _metadata(side)
        if side_meta.get("format") != TRAIN_FORMAT:
            raise WeightsError(f"{sidecar} is not a progcodec training-tensor file")
        if side_meta.get("weights_digest") != hashlib.sha256(data).digest()[:8].hex():
            raise WeightsError(f"{sidecar} belongs to another weight file than {path}")
        extras = _train_tensors(st_load(side))
    if not extras:
        raise WeightsError(f"{path} has no training tensors (inline or in {sidecar.name}): "
                           "cannot resume training from it")
    state.update(extras)
    return ModelConfig(**json.loads(meta["config"])), state
