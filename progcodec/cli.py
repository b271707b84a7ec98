"""The `progcodec` command line: a thin layer over progcodec.codec.

Exit status: 0 success, 1 bad input or corrupt data (one line on stderr), 2 usage error.
"""
from __future__ import annotations

import io
import json
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path

import click
from PIL import Image, UnidentifiedImageError

from . import codec, container
from .container import MAX_FILE_BYTES, MAX_PIXELS, FormatError
from .weights import DEFAULT_MODEL, WeightsError

# Pillow's own decompression-bomb guard, at our limit (we also check sizes before decoding).
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

EXIT_BAD_INPUT = 1
_INPUT_ERRORS = (codec.CodecError, FormatError, WeightsError, OSError, UnidentifiedImageError,
                 Image.DecompressionBombError, ValueError, SyntaxError)


class InputError(Exception):
    """A per-file failure with a one-line message."""


class Interrupted(BaseException):
    """Ctrl-C (SIGINT). Not a KeyboardInterrupt, which click would turn into 'Aborted!' and
    exit status 1: run() turns it into one line and exit status 130."""


def _err(msg: str) -> None:
    click.echo(f"progcodec: error: {msg}", err=True)


def _warn(msg: str) -> None:
    click.echo(f"progcodec: warning: {msg}", err=True)


def _describe(e: BaseException) -> str:
    """One line for the user; the caller prefixes the input's name."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, UnidentifiedImageError):
        return "not a readable image"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _read_input(path: str) -> bytes:
    """All bytes of a file or stdin, refusing more than MAX_FILE_BYTES (e.g. /dev/zero)."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"input larger than {MAX_FILE_BYTES} bytes")
    return data


def write_atomic(path: str, data: bytes, inputs: tuple[str, ...] = ()) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written output."""
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    for i in inputs:  # the same file by any name: a symlink, a hard link, a relative path
        if i != "-" and target.exists() and Path(i).exists() and os.path.samefile(i, target):
            raise InputError(f"refusing to overwrite the input file {path}")
    if not target.parent.is_dir():
        raise InputError(f"output directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; outputs follow the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_image(path: str) -> Image.Image:
    data = _read_input(path)
    if not data:
        raise InputError("empty file")
    try:
        with warnings.catch_warnings():  # sizes Pillow only warns about: check_image_size refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
        codec.check_image_size(*im.size)  # before any pixel is decoded
        im.load()
    except UnidentifiedImageError:
        raise InputError("not a readable image") from None
    except Image.DecompressionBombError:  # Pillow's guard fires from the header, like ours
        raise InputError(f"image exceeds the limit of {MAX_PIXELS} pixels") from None
    return im


def _finite(ctx, param, value):
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    return value


def _prefix_options(f):
    f = click.option("--quality", "-q", type=click.FloatRange(0, 1), default=None, callback=_finite,
                     help="Keep a prefix chosen by quality Q in [0, 1]: 0 is the smallest decodable "
                          "prefix, 1 the whole file; bytes = min * (total/min) ** Q, so equal steps "
                          "of Q are equal ratios of bytes.")(f)
    f = click.option("--bytes", "-b", "nbytes", type=click.IntRange(min=1), default=None,
                     help="Keep the first N bytes of the file (at least its minimum decodable length).")(f)
    f = click.option("--bpp", type=click.FloatRange(min=0, min_open=True), default=None, callback=_finite,
                     help="Keep a prefix of B bits per pixel: floor(B * width * height / 8) bytes.")(f)
    return f


def _check_one_prefix(quality, nbytes, bpp) -> None:
    if sum(v is not None for v in (quality, nbytes, bpp)) > 1:
        raise click.UsageError("give at most one of --quality, --bytes, --bpp")


_model_option = click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True,
    help="Shipped model name, or path to a .safetensors weight file.")
# Reading commands: a file names the model it was encoded with (by the digest of its weight
# file), so by default that one decodes it.
_read_model_option = click.option(
    "--model", "-m", default=None,
    help="Shipped model name, or path to a .safetensors weight file. Default: the shipped model "
         "the file's header names (by the digest of its weights).")
_device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where the networks run; auto picks CUDA when available. Files are identical either way.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="progcodec")
def main():
    """progcodec: progressive learned image codec.

    An image is encoded once into a .pic file; any prefix of that file, cut at any byte at or
    past its minimum length (header and hyperprior), decodes to a complete image whose quality
    rises with the bytes kept.

    Exit status: 0 success, 1 bad input or corrupt data, 2 usage error.
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", default=None,
              help="Output .pic file, '-' for stdout, or a directory (required for several inputs; "
                   "created if missing). Default: the input path with suffix .pic.")
@_prefix_options
@click.option("--refine", type=click.FloatRange(0, 1), default=None, callback=_finite, metavar="FRACTION",
              help="Fraction of the latent elements, most important first, that get one "
                   "refinement bit at the end of the file: it raises the quality of the whole "
                   "file and of long prefixes, and shorter prefixes do not pay for it "
                   f"(docs/refinement.md). 0 writes no refinement. Default: {codec.DEFAULT_REFINE}.")
@click.option("--search", type=click.IntRange(min=0), default=0, metavar="STEPS",
              help="Steps of latent search: the encoder tunes the latent to this image "
                   "(docs/latent-search.md). 10 makes files a few percent smaller at equal "
                   "quality, for many times the encode time; decoding is unchanged. Such a "
                   "file's bytes may differ between machines, and it decodes the same on all "
                   "of them. Default: 0.")
@click.option("--search-z/--no-search-z", default=True,
              help="Let the search move the hyper-latent z too, and with it the means, scales "
                   "and coding order: short prefixes gain as well, for about twice the time "
                   "per step. Images above 0.5 Mpx are searched tile by tile. Default: on.")
@_model_option
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bar and no summary lines.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per input (input, output, bytes, bpp, seconds) on stdout.")
def encode(inputs, output, quality, nbytes, bpp, refine, search, search_z, model, device, quiet,
           as_json):
    """Encode images (PNG, JPEG, ... ; '-' reads stdin) into .pic files.

    With several inputs, a failing file is reported and skipped; the exit status is then 1."""
    _check_one_prefix(quality, nbytes, bpp)
    many = len(inputs) > 1
    if many and (output is None or output == "-"):
        raise click.UsageError("several inputs need -o DIRECTORY")
    if many and "-" in inputs:
        raise click.UsageError("stdin ('-') can only be encoded alone")
    if output is None and "-" in inputs:
        raise click.UsageError("reading stdin needs -o FILE or -o -")
    if output == "-" and as_json:
        raise click.UsageError("--json and -o - both use stdout")
    out_dir = None
    if output is not None and output != "-" and (many or Path(output).is_dir()):
        out_dir = Path(output)
        if out_dir.exists() and not out_dir.is_dir():
            raise click.UsageError(f"-o {output}: not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
    destinations: dict[str, str] = {}

    failures = 0
    show_bar = many and not quiet and not as_json
    with click.progressbar(inputs, label="encoding", file=sys.stderr, show_pos=True,
                           hidden=not show_bar) as bar:
        for inp in bar:
            if out_dir is not None:
                dest = str(out_dir / (Path(inp).stem + ".pic"))
            else:
                dest = output or str(Path(inp).with_suffix(".pic"))
            try:
                if dest != "-" and dest in destinations:
                    raise InputError(f"output {dest} would also be written for {destinations[dest]}")
                destinations[dest] = inp
                t0 = time.perf_counter()
                im = _load_image(inp)
                data = codec.encode(im, model=model, device=device, quality=quality,
                                    nbytes=nbytes, bpp=bpp, refine=refine, search=search,
                                    search_z=search_z)
                seconds = time.perf_counter() - t0
                write_atomic(dest, data, inputs)
            except WeightsError as e:  # no model: every file would fail the same way
                _err(_describe(e))
                sys.exit(EXIT_BAD_INPUT)
            except Exception as e:  # one bad file never stops a batch
                failures += 1
                _err(f"{inp}: {_describe(e)}")
                continue
            if codec.is_transparent(im):
                _warn(f"{inp}: transparency composited on white (.pic files hold RGB)")
            hdr = container.parse_header(data)  # the size as displayed (EXIF orientation applied)
            w, h = hdr.width, hdr.height
            rec = {"input": inp, "output": dest, "bytes": len(data),
                   "bpp": 8 * len(data) / (w * h), "width": w, "height": h,
                   "seconds": round(seconds, 4)}
            if as_json:
                click.echo(json.dumps(rec))
            elif not quiet and dest != "-" and not many:
                click.echo(f"{inp} -> {dest}: {len(data)} bytes, {rec['bpp']:.4f} bpp, "
                           f"{seconds:.2f} s", err=True)
    if failures:
        if many:
            _err(f"{failures} of {len(inputs)} inputs failed")
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("input")
@click.option("--output", "-o", default=None,
              help="Output image (format from its suffix: .png, .ppm, .bmp, .tif ...), or '-' for "
                   "PNG on stdout. Default: the input path with suffix .decoded.png.")
@_prefix_options
@_read_model_option
@_device_option
@click.option("--strict", is_flag=True,
              help="Fail on a block that fails its checksum instead of decoding the intact prefix.")
@click.option("--quiet", is_flag=True, help="No summary line.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON object (bytes used, elements decoded, seconds) on stdout.")
def decode(input, output, quality, nbytes, bpp, model, device, strict, quiet, as_json):
    """Decode a .pic file, or any prefix of one ('-' reads stdin), into an image."""
    _check_one_prefix(quality, nbytes, bpp)
    if output is None:
        if input == "-":
            raise click.UsageError("reading stdin needs -o FILE or -o -")
        # never next to the original as photo.png: decoding photo.pic would replace it
        output = str(Path(input).with_suffix(".decoded.png"))
    if output == "-" and as_json:
        raise click.UsageError("--json and -o - both use stdout")
    fmt = "PNG"
    if output != "-":
        ext = Path(output).suffix.lower()
        fmt = Image.registered_extensions().get(ext)
        if fmt is None or fmt not in Image.SAVE:
            raise click.UsageError(f"-o {output}: cannot write images of type {ext or '(no suffix)'!r}")
    try:
        t0 = time.perf_counter()
        data = _read_input(input)
        d = codec.decode_detailed(data, quality=quality, nbytes=nbytes, bpp=bpp, model=model,
                                  device=device, strict=strict)
        seconds = time.perf_counter() - t0
        buf = io.BytesIO()
        d.image.save(buf, format=fmt)
        write_atomic(output, buf.getvalue(), (input,))
    except (InputError, *_INPUT_ERRORS) as e:
        _err(f"{input}: {_describe(e)}")
        sys.exit(EXIT_BAD_INPUT)
    for w in d.warnings:
        _warn(f"{input}: {w}")
    w, h = d.image.size
    rec = {"input": input, "output": output, "bytes_used": d.bytes_used,
           "bpp": 8 * d.bytes_used / (w * h), "elements_decoded": d.elements_decoded,
           "elements_total": d.elements_total, "refinements_decoded": d.refinements_decoded,
           "refinements_total": d.refinements_total, "width": w, "height": h,
           "seconds": round(seconds, 4), "warnings": d.warnings}
    if as_json:
        click.echo(json.dumps(rec))
    elif not quiet and output != "-":
        click.echo(f"{input} -> {output}: {d.bytes_used} bytes ({rec['bpp']:.4f} bpp), "
                   f"{d.elements_decoded}/{d.elements_total} elements, {seconds:.2f} s", err=True)


@main.command()
@click.argument("input")
@click.option("--output", "-o", required=True, help="Output .pic file, or '-' for stdout.")
@_prefix_options
def truncate(input, output, quality, nbytes, bpp):
    """Write a smaller valid .pic: a prefix of INPUT chosen by --quality, --bytes or --bpp."""
    _check_one_prefix(quality, nbytes, bpp)
    if quality is None and nbytes is None and bpp is None:
        raise click.UsageError("give one of --quality, --bytes, --bpp")
    try:
        data = _read_input(input)
        write_atomic(output, codec.truncate(data, quality=quality, nbytes=nbytes, bpp=bpp), (input,))
    except (InputError, *_INPUT_ERRORS) as e:
        _err(f"{input}: {_describe(e)}")
        sys.exit(EXIT_BAD_INPUT)


@main.command()
@click.argument("input")
@_read_model_option
@click.option("--json", "as_json", is_flag=True, help="Print the fields as one JSON object.")
def info(input, model, as_json):
    """Describe a .pic file: format, model, image size, bytes, bpp, y elements decodable."""
    try:
        rec = codec.info(_read_input(input), model=model)
    except (InputError, *_INPUT_ERRORS) as e:
        _err(f"{input}: {_describe(e)}")
        sys.exit(EXIT_BAD_INPUT)
    if as_json:
        click.echo(json.dumps(rec))
        return
    for k, v in rec.items():
        if k == "bpp":
            v = f"{v:.4f}"
        click.echo(f"{k:22s} {v}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args):
    """Train a model (same as python -m progcodec.train; --help for its options)."""
    from . import train as training
    sys.exit(training.main(list(args)))


@main.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for results.json, <codec>.json, results.md and rd.png (created).")
@click.option("--against", default="", metavar="CODECS",
              help="Comma-separated classic codecs to measure in the same run: jpeg, "
                   "jpeg-progressive, jpeg2000, webp. One whose tool is missing is skipped with a "
                   "note. Default: none.")
@click.option("--anchors", type=click.Path(exists=True, file_okay=False), default=None,
              help="Directory of published curves (*.json, CompressAI's result schema) to plot "
                   "and include in the BD-rate table.")
@click.option("--reference", default=None, metavar="NAME|FILE.json",
              help="BD-rate reference: a curve's key or name (progcodec, jpeg, jpeg2000, an "
                   "anchor's file stem or name), or a CompressAI-schema JSON file. Default: the "
                   "truncated JPEG 2000 measured here, else a JPEG 2000 anchor, else JPEG.")
@click.option("--limit", type=click.IntRange(min=0), default=0,
              help="Only the first N images (sorted by name); 0: all.")
@click.option("--refine", type=click.FloatRange(0, 1), default=None, callback=_finite, metavar="FRACTION",
              help="Encode with this refinement fraction (as `encode --refine`). "
                   f"Default: {codec.DEFAULT_REFINE}.")
@click.option("--search", type=click.IntRange(min=0), default=0, metavar="STEPS",
              help="Encode with this many steps of latent search (as `encode --search`). "
                   "Default: 0.")
@click.option("--search-z/--no-search-z", default=True,
              help="As `encode --search-z`. Default: on.")
@_model_option
@_device_option
@click.option("--quiet", is_flag=True, help="No progress bar, notes or summary on stderr.")
def eval_(dataset, out_dir, against, anchors, reference, limit, refine, search, search_z, model,
          device, quiet):
    """Rate-distortion evaluation on a folder of images (e.g. Kodak).

    One encode per image with the model, then decodes of prefixes at 0.05, 0.1, 0.15, 0.2,
    0.3, 0.4, 0.5, 0.75, 1, 1.5 and 2 bpp (where the file is longer) and of the whole file;
    bpp = 8 x bytes decoded / pixels; PSNR-RGB (peak 255) and MS-SSIM. Means per step are over
    the images that reach it; the curves (plot, BD-rates) keep the steps every image reaches
    and the whole file. Classic codecs run in the same pass; published curves are read from
    --anchors.

    Writes to the output directory: results.json (CompressAI's result schema, per-image values
    and the run's details included), <codec>.json per measured codec, results.md (tables,
    BD-rates, timings, the command) and rd.png (needs matplotlib: pip install
    'progcodec[eval]')."""
    import shlex

    from . import evaluate
    codecs = [c.strip() for c in against.split(",") if c.strip()]
    unknown = [c for c in codecs if c not in evaluate.classic.RUNNERS]
    if unknown:
        raise click.UsageError(f"--against: unknown codec {unknown[0]!r}; choose from "
                               + ", ".join(evaluate.classic.RUNNERS))
    note = (lambda m: None) if quiet else (lambda m: click.echo(f"progcodec: note: {m}", err=True))
    args = ["progcodec", "eval", dataset, "-o", out_dir]  # the run, as a command to repeat
    for flag, value, default in (("--against", against, ""), ("--anchors", anchors, None),
                                 ("--reference", reference, None), ("--limit", limit, 0),
                                 ("--refine", refine, None), ("--search", search, 0),
                                 ("--model", model, DEFAULT_MODEL), ("--device", device, "auto")):
        if value != default:
            args += [flag, str(value)]
    if search and not search_z:
        args.append("--no-search-z")
    command = shlex.join(args)
    try:
        n = len(evaluate.list_images(Path(dataset), limit))
        with click.progressbar(length=n, label="eval", file=sys.stderr, show_pos=True,
                               hidden=quiet) as bar:
            res = evaluate.run(Path(dataset), model=model, device=device, against=codecs,
                               anchors=anchors, reference=reference, limit=limit, command=command,
                               refine=refine, search=search, search_z=search_z,
                               on_image=lambda name: bar.update(1), note=note)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        evaluate.write_outputs(res, Path(out_dir), lambda p, d: write_atomic(p, d), note=note)
    except (evaluate.EvalError, InputError, *_INPUT_ERRORS) as e:
        _err(_describe(e))
        sys.exit(EXIT_BAD_INPUT)
    if not quiet:
        click.echo(evaluate.markdown(res), err=True)


@main.command()
@click.argument("input")
@click.option("--output", "-o", required=True, help="Output PNG.")
@click.option("--cuts", default=None, metavar="LIST",
              help="Comma-separated prefixes: bytes (600), bits per pixel (0.25bpp) or 'full'. "
                   "Default: 6 prefixes from the minimum decodable one to the whole file, equal "
                   "ratios of bytes apart.")
@click.option("--original", default=None, help="The original image: adds PSNR-RGB to the labels.")
@_read_model_option
@_device_option
def ladder(input, output, cuts, original, model, device):
    """Picture of one .pic file decoded at several prefixes side by side, each labelled with
    its bytes, bpp and (with --original) PSNR."""
    from . import ladder as ladder_mod
    try:
        data = _read_input(input)
        codec.truncate(data, quality=0)  # too short or not a .pic: one clear error
        cut_list = None
        if cuts is not None:
            rec = codec.info(data, model=model)
            try:
                cut_list = ladder_mod.parse_cuts(cuts, rec["width"], rec["height"], len(data))
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--cuts") from None
        orig = _load_image(original) if original else None
        png = ladder_mod.ladder_png(data, cut_list, orig, model=model, device=device)
        write_atomic(output, png, (input,))
    except (InputError, *_INPUT_ERRORS) as e:
        _err(f"{input}: {_describe(e)}")
        sys.exit(EXIT_BAD_INPUT)


def run() -> None:
    """Console entry point: no traceback reaches the user unless PROGCODEC_DEBUG is set."""
    def interrupt(signum, frame):
        raise Interrupted()

    signal.signal(signal.SIGINT, interrupt)
    try:
        main(standalone_mode=True)
    except (Interrupted, KeyboardInterrupt):  # outputs in progress were removed on the way out
        _err("interrupted")
        sys.exit(130)
    except BrokenPipeError:  # e.g. `progcodec decode x.pic -o - | head -c 10`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:  # a bug or a resource failure: still one line, still exit 1
        if os.environ.get("PROGCODEC_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {_describe(e)} (set PROGCODEC_DEBUG=1 for details)")
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    run()
