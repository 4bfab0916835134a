"""The estimate rows of the step-cost table (benchmarks/step_costs.csv) from FLOP counts.

Each paper teacher's full-size network and decoder are built on the meta device (no weights, no
memory) and their FLOPs per image counted by `torch.utils.flop_counter` (matmuls, convolutions and
attention; elementwise work is not counted): the network's forward F, its forward + backward T
(gradients for every weight and the input), the soft decode D (expected code vectors into the
decoder) and its forward + input-backward, the reward model's (open_clip ViT-g-14 at 224, the CLIP
score the reward refinement ascends) forward + input-backward R, and Inception-v3 at 299 (I). Text
conditions are encoded by a CLIP text tower, 2 N_text FLOPs per token over 77 tokens (N_text the
tower's matmul parameters). A Di[M]O step per image (aux_updates 1; teacher CFG w as the teacher's
default, 2 forwards when w != 1) costs

    step = T (theta) + (2 | 1) F (phi) + F (psi, Di[M]O term) + F (theta, fresh pass) + T (psi)
           + 2 x text encoding (text-to-image)
    GAN: + T (phi with gradient to its input) + 2 F (the discriminator's real and fake features)
    reward: + D forward + input-backward + R

Seconds = FLOPs / (UTILISATION x the GPU's dense peak at the precision): bf16 and tf32 on tensor
cores, fp32 on the CUDA cores (NVIDIA datasheets, dense, no sparsity); decodes and metrics at the
fp32 peak in every row, as the harness runs them in float32. Metrics per 1k images: two
Inception passes for the class-conditional teachers (clean-fid features for FID and PRDC,
torch-fidelity's for IS); for the text-to-image teachers the CLIP ViT-g-14 and HPS v2 (ViT-H-14)
forwards of their default metrics (GenEval's detector is not counted).

    python benchmarks/step_cost_estimates.py            # print the rows
    python benchmarks/step_cost_estimates.py --write    # replace the estimate rows of the table,
                                                        # keeping its measured rows
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.builtin import plugins  # noqa: E402
from harness.contracts import registry  # noqa: E402
from harness.launch.cost_plan import TABLE, StepCost, read_rows, write_rows  # noqa: E402
from softdimo.teachers.base import Condition  # noqa: E402

UTILISATION = 0.40
# Dense peak TFLOP/s (no sparsity): H100 SXM5 and H200 SXM (the same GH100 compute), A100 SXM4.
PEAK_TFLOPS = {
    "h100": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "h200": {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9},
    "a100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5},
}
PEAK_NAMES = {"h100": "H100 SXM5", "h200": "H200 SXM", "a100": "A100 SXM4"}
TEXT_TOKENS = 77
T2I_METRICS = "CLIP ViT-g-14 at 224 and HPS v2 ViT-H-14 at 224 (GenEval's detector not counted)"

#----------------------------------------------------------------------------
# FLOP counting on the meta device.


# FLOPs of `fn()` (forward and, if it calls backward, backward).
def flops(fn: Callable[[], object]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# Forward FLOPs of a module's output under no_grad, and forward + backward of the sum of its output.
def forward_and_train(fn: Callable[[bool], torch.Tensor]) -> tuple[float, float]:
    def train() -> None:
        fn(True).float().sum().backward()
    with torch.no_grad():
        forward = flops(lambda: fn(False))
    return forward, flops(train)


# The per-image FLOPs of one teacher.
@dataclass(frozen=True)
class TeacherFlops:
    name: str
    batch: int                 # its default distill.batch_size (the global batch of the rows)
    cfg: float                 # its default distill.teacher_cfg
    forward: float
    train: float
    decode: float
    decode_train: float        # soft decode forward + backward to its input
    text: float                # one text encoding (0 for class labels)
    metrics: float             # its default metrics' networks, forward
    metrics_note: str


def _text_tower_flops(layers: int, width: int) -> float:
    return 2.0 * 12 * layers * width ** 2 * TEXT_TOKENS      # 12 L w^2 matmul parameters per block stack


def _inception() -> float:
    from harness.methods.metrics.features import empty_tfidelity_inception, pool3_body
    body = pool3_body(empty_tfidelity_inception().eval().to_empty(device="meta"))
    with torch.no_grad():
        return flops(lambda: body(torch.zeros(1, 3, 299, 299, device="meta")))


def _open_clip_image(arch: str, size: int, backward: bool) -> float:
    import open_clip
    model = open_clip.create_model(arch, pretrained=None, device="meta").requires_grad_(False)
    x = torch.zeros(1, 3, size, size, device="meta", requires_grad=backward)
    if backward:
        return flops(lambda: model.encode_image(x).float().sum().backward())
    with torch.no_grad():
        return flops(lambda: model.encode_image(x))


def _soft_decode(decode: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]) -> tuple[float, float]:
    def run(grad: bool) -> torch.Tensor:
        probs = torch.zeros(shape, device="meta", requires_grad=grad)
        return decode(probs)
    return forward_and_train(run)


def _network(net: torch.nn.Module, cond: Condition) -> tuple[float, float]:
    layout = net.layout
    probs = torch.zeros(1, layout.positions, layout.groups, layout.classes, device="meta")

    def run(grad: bool) -> torch.Tensor:     # the input as phi and psi read it (embed_soft of one-hot)
        net.requires_grad_(grad)
        return net(net.embed_soft(probs), cond).logits
    return forward_and_train(run)


# A class-conditional teacher's FLOPs (network on its soft input, soft decode of its layout).
def _class_conditioned(teacher: object, metrics: float) -> TeacherFlops:
    cond = Condition("class", {"labels": torch.zeros(1, dtype=torch.long, device="meta")})
    forward, train = _network(teacher.network, cond)
    layout = teacher.layout
    decode, decode_train = _soft_decode(teacher.decode_soft, (1, layout.positions, layout.groups, layout.classes))
    return _teacher_flops(teacher.name, forward, train, decode, decode_train, 0.0, metrics,
                          "two Inception-v3 passes (FID/PRDC, IS)")


# The per-image FLOPs with the teacher's registered paper defaults (global batch, teacher CFG).
def _teacher_flops(name: str, *counts: object) -> TeacherFlops:
    defaults = registry.teachers.get(name).default_params
    return TeacherFlops(name, defaults["distill.batch_size"], defaults["distill.teacher_cfg"], *counts)


def maskbit(metrics: float) -> TeacherFlops:
    from softdimo.teachers.maskbit import MaskBitConfig, MaskBitTeacher, generator_arch, tokenizer_arch
    from softdimo.teachers.maskbit_generator import LFQBert
    from softdimo.teachers.maskbit_tokenizer import MaskBitTokenizer
    with torch.device("meta"):
        teacher = MaskBitTeacher(MaskBitConfig(), LFQBert(generator_arch("full", 14)),
                                 MaskBitTokenizer(tokenizer_arch("full", 14)))
    return _class_conditioned(teacher, metrics)


def maskgit(metrics: float) -> TeacherFlops:
    from softdimo.teachers.maskgit import MaskGITConfig, MaskGITTeacher, transformer_arch, vqgan_arch
    from softdimo.teachers.maskgit_transformer import MaskGITTransformer
    from softdimo.teachers.vqgan import VQGAN
    with torch.device("meta"):
        teacher = MaskGITTeacher(MaskGITConfig(), MaskGITTransformer(transformer_arch("full")),
                                 VQGAN(vqgan_arch("full")))
    return _class_conditioned(teacher, metrics)


def maskgen(metrics: float) -> TeacherFlops:
    from softdimo.teachers.maskgen import MASKGEN_ARCHS, MaskGenNetwork
    from softdimo.teachers.tatitok import TATITOK_ARCHS, TATiTok
    arch = MASKGEN_ARCHS["L"]
    with torch.device("meta"):
        net, tokenizer = MaskGenNetwork(arch), TATiTok(TATITOK_ARCHS["bl128_vq"], with_encoder=False)
    text = torch.zeros(1, TEXT_TOKENS, arch.text_dim, device="meta")
    cond = Condition("text", {"seq": text, "pooled": torch.zeros(1, arch.text_dim, device="meta"),
                              "aesthetic": torch.zeros(1, device="meta")})
    forward, train = _network(net, cond)
    decode, decode_train = _soft_decode(lambda p: tokenizer.decode_probs(p[..., 0, :], text),
                                        (1, arch.seq_len, 1, arch.codebook_size))
    return _teacher_flops("maskgen", forward, train, decode, decode_train, _text_tower_flops(12, 768), metrics,
                          T2I_METRICS)


def meissonic(metrics: float) -> TeacherFlops:
    from softdimo.teachers.meissonic_transformer import MEISSONIC_ARCHS, MeissonicNetwork
    from softdimo.teachers.vq_decoder import VQ_DECODER_ARCHS, VQDecoder
    arch = MEISSONIC_ARCHS["full"]
    with torch.device("meta"):
        net, decoder = MeissonicNetwork(arch), VQDecoder(VQ_DECODER_ARCHS["full"])
    cond = Condition("text", {"seq": torch.zeros(1, TEXT_TOKENS, arch.text_dim, device="meta"),
                              "pooled": torch.zeros(1, arch.pooled_dim, device="meta"),
                              "micro": torch.zeros(1, 5, device="meta"), "timestep": torch.zeros(1, device="meta")})
    forward, train = _network(net, cond)
    decode, decode_train = _soft_decode(lambda p: decoder.decode_probs(p[..., 0, :]),
                                        (1, arch.grid ** 2, 1, arch.codebook_size))
    return _teacher_flops("meissonic", forward, train, decode, decode_train, _text_tower_flops(24, 1024), metrics,
                          T2I_METRICS)


#----------------------------------------------------------------------------
# Rows.


# Per-image FLOPs of a Di[M]O step with a refinement (`none`, `gan`, `reward`).
def step_flops(t: TeacherFlops, refinement: str, reward: float) -> float:
    step = 2 * t.train + (2 if t.cfg != 1.0 else 1) * t.forward + 2 * t.forward + 2 * t.text
    if refinement == "gan":
        step += t.train + 2 * t.forward
    elif refinement == "reward":
        step += t.decode_train + reward
    return step


# The estimate rows of one teacher for every GPU kind, precision and refinement it takes.
def rows(t: TeacherFlops, reward: float) -> list[StepCost]:
    refinements = ("none", "gan") if t.text == 0 else ("none", "reward")
    out = []
    for gpu, peaks in PEAK_TFLOPS.items():
        fp32_rate = UTILISATION * peaks["fp32"] * 1e12          # decoders and metrics always run in float32
        for precision, peak in peaks.items():
            rate = UTILISATION * peak * 1e12
            for refinement in refinements:
                step = step_flops(t, refinement, reward)
                source = (f"{step / 1e12:.3g} TFLOP per image per step (torch.utils.flop_counter) at "
                          f"{UTILISATION:.0%} of the {PEAK_NAMES[gpu]} dense {precision} peak {peak:g} TFLOP/s; "
                          f"decode and metrics ({t.metrics_note}) at the fp32 peak "
                          f"(benchmarks/step_cost_estimates.py)")
                out.append(StepCost(t.name, refinement, precision, gpu, t.batch,
                                    round(t.batch * step / rate, 4), round(1000 * t.forward / rate, 3),
                                    round(1000 * t.decode / fp32_rate, 3), round(1000 * t.metrics / fp32_rate, 3),
                                    "estimate", source))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the estimate rows of {TABLE}")
    args = parser.parse_args()
    plugins.load_builtins()
    inception = _inception()
    clip_g, hps_h = _open_clip_image("ViT-g-14", 224, False), _open_clip_image("ViT-H-14", 224, False)
    reward = _open_clip_image("ViT-g-14", 224, True)
    print(f"Inception-v3 {inception / 1e9:.3g} GFLOP, CLIP ViT-g-14 {clip_g / 1e9:.4g}, HPS ViT-H-14 "
          f"{hps_h / 1e9:.4g}, ViT-g-14 forward + input-backward {reward / 1e9:.4g} GFLOP per image")
    teachers = [maskbit(2 * inception), maskgit(2 * inception), maskgen(clip_g + hps_h), meissonic(clip_g + hps_h)]
    estimates = []
    for t in teachers:
        print(f"{t.name}: forward {t.forward / 1e9:.4g}, forward+backward {t.train / 1e9:.4g}, soft decode "
              f"{t.decode / 1e9:.4g} (+ backward {t.decode_train / 1e9:.4g}), text {t.text / 1e9:.3g} GFLOP per image; "
              + ", ".join(f"step {r} {step_flops(t, r, reward) / 1e12:.3g} TFLOP"
                          for r in ("none", "gan", "reward")))
        estimates += rows(t, reward)
    if args.write:
        measured = [r for r in read_rows(TABLE) if r.status == "measured"] if TABLE.is_file() else []
        write_rows(TABLE, estimates + measured)
        print(f"wrote {len(estimates)} estimate rows (+ {len(measured)} measured) to {TABLE}")


if __name__ == "__main__":
    main()
