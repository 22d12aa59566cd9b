"""generate@S speed: our stage end to end vs a bare batched diffusers loop, in the same process.

    python benchmarks/generate_bench.py                    # params.yaml settings (CPU: the tiny model)
    python benchmarks/generate_bench.py --mode dpmpp25     # 25 DPM++ steps, fp16, batch 16 (GPU: 768x768)
    python benchmarks/generate_bench.py --mode compile     # the same with torch.compile
    python benchmarks/generate_bench.py --mode reference   # 50 steps: our batched stage vs the reference
                                                           # team's batch-1 loop (render, resize 512, save JPEG)
    python benchmarks/generate_bench.py --engine ray       # the timed stage run on runtime.engine: ray

On a GPU it builds the full SD 2.1 (768-v) architecture with random weights (no download; speed does
not depend on the weight values) unless --model names a real pipeline; on CPU it uses the tiny model.
Stage time includes prompt planning, noise, denoising, decoding, encoding and writing the files and
the manifest; the model is loaded and warmed up (and compiled) before either clock starts.
Targets (issue 10, one H100, 768x768, guidance 9): stage >= 95% of the bare loop; >= 2.5 img/s at
25 DPM++ steps fp16; >= 3.2 img/s with compile; reference mode >= 1.8x the batch-1 loop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._record import add_out_argument, record

FIXTURE = REPO / "tests" / "fixtures" / "gpt4-prompts-3k.txt"


def build_sd21_architecture(output: Path) -> None:
    """SD 2.1 768-v layout (configs as published) with seeded random fp16 weights, saved like a checkpoint."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from scripts.tiny_model import build_tokenizer_files, write_tokenizer_files

    vocab, merges = build_tokenizer_files(400)
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer_files(vocab, merges, Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, model_max_length=77)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(
            sample_size=96,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            attention_head_dim=(5, 10, 20, 20),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=1024,
            use_linear_projection=True,
            upcast_attention=True,
        ).half()
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            latent_channels=4,
            layers_per_block=2,
            sample_size=768,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        ).half()
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=23,
                num_attention_heads=16,
                max_position_embeddings=77,
                hidden_act="gelu",
                projection_dim=512,
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
            )
        ).half()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(output, safe_serialization=True)


def read_prompts(n: int) -> list[str]:
    lines = []
    if FIXTURE.exists():
        lines = [line.strip().lstrip("- ") for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = lines or [f"a photo of a red house by a lake, number {i}" for i in range(n)]
    return [lines[i % len(lines)] + ("" if i < len(lines) else f" ({i})") for i in range(n)]


def bench_settings(mode: str, on_gpu: bool, model: str, args):
    from scripts.generate import load_settings
    from scripts.lib.params import load_params

    s = load_settings(load_params("generate", REPO / "params.yaml"))
    s = s.replace(model=model)
    if on_gpu and mode != "default":
        s = s.replace(height=768, width=768, guidance=9.0, dtype="fp16", device="cuda")
    if mode in ("dpmpp25", "compile"):
        s = s.replace(steps=25, scheduler="dpmpp", batch_size=16 if on_gpu else s.batch_size, compile=mode == "compile")
    elif mode == "reference":
        s = s.replace(
            steps=50,
            scheduler="ddim",
            resize=512 if on_gpu else 48,
            format="jpg",
            batch_size=8 if on_gpu else s.batch_size,
        )
    overrides = {
        k: v
        for k, v in (
            ("batch_size", args.batch_size),
            ("steps", args.steps),
            ("height", args.size),
            ("width", args.size),
            ("cpu_dtype", args.cpu_dtype),
        )
        if v
    }
    return s.replace(**overrides)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_stage(prompts: list[str], settings, workdir: Path, tag: str, engine: str = "local") -> tuple[float, float]:
    """Our stage on `prompts` into a fresh folder; returns (wall, process CPU) seconds. On engine ray
    the process CPU is the driver's only, and the wall time includes starting Ray and its actors."""
    import pandas as pd

    from scripts.generate import generate
    from scripts.lib.params import Runtime

    table = pd.DataFrame({"id": [f"{tag}-{i}" for i in range(len(prompts))], "text": prompts, "prompt": prompts})
    start, cpu_start = time.perf_counter(), time.process_time()
    counts = generate(table, settings, workdir / tag, runtime=Runtime(engine=engine))
    synchronize()
    elapsed = time.perf_counter() - start, time.process_time() - cpu_start
    assert counts["rendered"] == len(prompts), counts
    return elapsed


def run_bare_loop(
    pipe, prompts: list[str], settings, batch_size: int, save_dir: Path | None = None
) -> tuple[float, float]:
    """A plain diffusers loop at the same settings: batched calls, PIL output (and, for the
    reference, resize + JPEG save in the same thread, as the reference team's script did)."""
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        generators = [torch.Generator("cpu").manual_seed(i + k) for k in range(len(batch))]
        images = pipe(
            batch,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            height=settings.height,
            width=settings.width,
            generator=generators,
        ).images
        if save_dir is not None:
            for k, image in enumerate(images):
                if settings.resize:
                    image = image.resize((settings.resize, settings.resize))
                image.save(save_dir / f"{i + k}.jpg", quality=95)
    synchronize()
    return time.perf_counter() - start, time.process_time() - cpu_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["default", "dpmpp25", "compile", "reference"], default="default")
    parser.add_argument("--images", type=int, default=None, help="images per timed run (GPU 96, CPU 128)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--model", default=None, help="pipeline dir or hub id (default: SD2.1 arch on GPU, tiny on CPU)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--arch",
        choices=["auto", "sd21", "tiny"],
        default="auto",
        help="model to build when --model is not given (auto: sd21 on GPU, tiny on CPU)",
    )
    parser.add_argument("--size", type=int, default=None, help="render height = width (smoke-testing sd21 on CPU)")
    parser.add_argument("--cpu-dtype", choices=["fp32", "fp64"], default=None)
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        help="append the result to this CSV (benchmarks/results/generate_speed.csv feeds `dvc plots show`)",
    )
    parser.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="runtime.engine of the timed stage run (ray: a local Ray instance, actors load the model)",
    )
    add_out_argument(parser)
    args = parser.parse_args()

    import torch

    from scripts.lib.render import load_pipeline, resolve_device, resolve_model
    from scripts.tiny_model import save_tiny_model

    if args.threads:
        torch.set_num_threads(args.threads)
    on_gpu = torch.cuda.is_available()
    record(args.out, note=None if on_gpu else "CPU SMOKE RUN (no CUDA device): not a GPU measurement")
    with tempfile.TemporaryDirectory(prefix="generate-bench-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if model is None:
            model = str(workdir / "model")
            t = time.perf_counter()
            sd21 = args.arch == "sd21" or (args.arch == "auto" and on_gpu)
            if sd21:
                build_sd21_architecture(Path(model))
            else:
                from scripts.lib.params import load_params

                save_tiny_model(load_params("tiny_model", REPO / "params.yaml"), Path(model))
            print(
                f"built {'SD2.1 architecture (random weights)' if sd21 else 'tiny model'} in {time.perf_counter() - t:.1f} s"
            )
        settings = bench_settings(args.mode, on_gpu, model, args)
        n = args.images or (96 if on_gpu else 128)
        if args.mode == "reference":
            n = args.images or (48 if on_gpu else 64)
        device, dtype = resolve_device(settings)
        print(
            f"mode={args.mode} device={device} ({torch.cuda.get_device_name() if on_gpu else f'{torch.get_num_threads()} threads'}) "
            f"dtype={dtype} {settings.width}x{settings.height} steps={settings.steps} scheduler={settings.scheduler} "
            f"guidance={settings.guidance} batch={settings.batch_size} compile={settings.compile} "
            f"format={settings.format} resize={settings.resize} images={n}"
        )

        # warm-up: load (and compile) once; both clocks start with the model in memory
        t = time.perf_counter()
        run_stage(read_prompts(settings.batch_size), settings, workdir, "warmup")
        print(f"load + warm-up: {time.perf_counter() - t:.1f} s")
        pipe = load_pipeline(settings, resolve_model(settings)[0], device, dtype)
        prompts = read_prompts(n)

        stage_s, stage_cpu = run_stage(prompts, settings, workdir, "stage", args.engine)
        if args.engine == "ray":
            print(
                f"engine ray (a local Ray, one actor per GPU or CPU; wall includes its start): {n / stage_s:.2f} img/s"
            )
        if args.mode == "reference":
            (workdir / "reference").mkdir()
            run_bare_loop(pipe, prompts[:2], settings, 1)  # warm the batch-1 shapes
            bare_s, bare_cpu = run_bare_loop(pipe, prompts, settings, 1, save_dir=workdir / "reference")
            label = "reference loop (batch 1, resize + JPEG save)"
        else:
            run_bare_loop(pipe, prompts[: settings.batch_size], settings, settings.batch_size)
            bare_s, bare_cpu = run_bare_loop(pipe, prompts, settings, settings.batch_size)
            label = f"bare diffusers loop (batch {settings.batch_size}, no saving)"
        print(
            f"our stage (end to end, incl. encode + write): {n / stage_s:.2f} img/s "
            f"({1000 * stage_s / n:.1f} ms/img wall, {1000 * stage_cpu / n:.1f} ms/img process CPU)"
        )
        print(
            f"{label}: {n / bare_s:.2f} img/s ({1000 * bare_s / n:.1f} ms/img wall, {1000 * bare_cpu / n:.1f} ms/img process CPU)"
        )
        print(
            f"ratio stage/bare: {bare_s / stage_s:.3f} (wall), {bare_cpu / stage_cpu:.3f} (CPU time; "
            "the fair one on a shared CPU machine)"
        )
        if args.record:
            device_name = torch.cuda.get_device_name() if on_gpu else f"cpu x{torch.get_num_threads()}"
            panel = f"{args.mode}: {device_name}, {settings.width}x{settings.height}, {settings.steps} steps"
            record_result(
                args.record,
                {
                    "panel": panel,
                    "date": time.strftime("%Y-%m-%d"),
                    "mode": args.mode,
                    "device": device_name,
                    "dtype": str(dtype),
                    "size": f"{settings.width}x{settings.height}",
                    "steps": settings.steps,
                    "batch": settings.batch_size,
                    "images": n,
                    "run": "stage",
                    "images_per_s": round(n / stage_s, 3),
                },
            )
            record_result(
                args.record,
                {
                    "panel": panel,
                    "date": time.strftime("%Y-%m-%d"),
                    "mode": args.mode,
                    "device": device_name,
                    "dtype": str(dtype),
                    "size": f"{settings.width}x{settings.height}",
                    "steps": settings.steps,
                    "batch": 1 if args.mode == "reference" else settings.batch_size,
                    "images": n,
                    "run": "reference loop" if args.mode == "reference" else "bare loop",
                    "images_per_s": round(n / bare_s, 3),
                },
            )


def record_result(path: Path, row: dict) -> None:
    """Append one measured row; the file is a committed plot source (timings never go into dvc.lock)."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new_file:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    main()
