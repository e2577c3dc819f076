# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""Memory plan for PromptKD runs, computed from parameter counts (no GPU, no download).

    python docs/memory_plan.py            # prints the Markdown tables pasted into docs/scaling.md

Everything is an estimate in GiB (2^30 bytes) per GPU unless marked "per node". Formulas (P = parameters, N = GPUs,
B = micro-batch per GPU, T = tokens per sequence, d = hidden size, L = layers, V = vocabulary, n = virtual tokens):

Parameter counts (architectures of the HF configs; tied embeddings for GPT-2 and OPT, untied for Llama):
    GPT-2  P = V d + 1024 d + L (12 d^2 + 13 d) + 2 d
    OPT    P = V d + 2050 d + L (4 d^2 + 4 d + 2 d f + f + d + 4 d) + 2 d          (f = FFN size)
    Llama  P = 2 V d + L (4 d^2 + 3 d f + 2 d) + d

States (mixed precision, DeepSpeed accounting):
    student weights      2 P_S    (bf16/fp16)             / N under ZeRO-3;   on CPU with offload_param
    student gradients    2 P_S                            / N under ZeRO-2/3; on CPU (fp32, 4 P_S / N) with offload
    student optimizer   12 P_S    (fp32 master + Adam m, v) / N under ZeRO-1/2/3; on CPU with offload_optimizer
    teacher weights      2 P_T    frozen, no gradients or optimizer. Replicated on every GPU without ZeRO and under
                                  ZeRO-1/2 (as in the official code); / N under ZeRO-3, where PromptKDTrainer
                                  partitions the teacher with its own optimizer-less ZeRO-3 engine
                                  (promptkd_trainer/distributed.py); on CPU with offload_param (the teacher's
                                  engine keeps the config's offload_param)
    soft prompt         16 n d_T  (fp32 weight, gradient, Adam m, v): 7 x hidden values, negligible
    Plain bf16 autocast without DeepSpeed stores 4 + 4 + 8 bytes instead of 2 + 2 + 12: the same 16 bytes/param.

Activations kept for backward (16-bit, SDPA/flash attention so no T^2 score tensor; Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models", 34 bytes per token per hidden unit per layer):
    without checkpointing   A = 34 B T d L
    with checkpointing      A = 2 B T d L + 34 B T d      (each layer's input, plus one layer recomputed)
    The teacher runs on T + n tokens (the prompt). Its backward reaches only the prompt, so the inputs of its frozen
    linear layers need not be saved: 34 is an upper bound for the teacher. Student and teacher graphs are alive at
    the same time in both update orders (update_order="paper" computes the first micro-batch's student logits before
    the window's prompt step), so the plan adds them.
Logits: PromptKDTrainer holds up to 4 tensors of B T V entries in the model dtype at once (student logits, prompted
    teacher logits, the target's logits, the divergence's gradient buffer): 4 x 2 B T V bytes. The divergences work on
    chunks of C = divergence_chunk_size positions in fp32: about 6 x 4 C V bytes more.
Generation (student, before the forward passes, not at the same time): KV cache 2 x 2 B T d L bytes (K and V, bf16).
    Under ZeRO-3, TRL's unwrap_model_for_generation gathers the whole student: + 2 P_S (1 - 1/N).
ZeRO-3 live parameters during forward/backward: about two gathered layers plus the embedding, 2 x 2 P_layer + 2 V d,
    for the student and for the teacher (their forwards and backwards do not overlap in time, so the larger counts).
Not counted: CUDA context (about 0.5-1 GiB), NCCL and DeepSpeed communication buckets (the shipped ZeRO-1/2 JSONs use
    2e8-element buckets, about 0.4 GiB each), allocator fragmentation. Keep 10-15 % headroom.
CPU (per node, with offload): optimizer 12 P_S + fp32 gradients 4 P_S (+ 2 P_S + 2 P_T weights with offload_param),
    pinned.
"""

from __future__ import annotations

from dataclasses import dataclass


GiB = 2**30
N_VIRTUAL = 7  # official prompt_len
CHUNK = 1024  # PromptKDConfig.divergence_chunk_size default
MAX_LENGTH = 512  # official max_length (prompt 256 + completion 256)


@dataclass(frozen=True)
class Model:
    name: str
    family: str  # "gpt2", "opt" or "llama"
    hidden: int
    layers: int
    vocab: int
    ffn: int

    def layer_params(self) -> int:
        d, f = self.hidden, self.ffn
        if self.family == "gpt2":
            return 12 * d * d + 13 * d
        if self.family == "opt":
            return 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d
        return 4 * d * d + 3 * d * f + 2 * d  # llama: q, k, v, o, gate, up, down, two RMSNorms

    def params(self) -> int:
        d, L, V = self.hidden, self.layers, self.vocab
        if self.family == "gpt2":
            return V * d + 1024 * d + L * self.layer_params() + 2 * d
        if self.family == "opt":
            return V * d + 2050 * d + L * self.layer_params() + 2 * d
        return 2 * V * d + L * self.layer_params() + d


GPT2 = dict(family="gpt2", vocab=50257)
OPT = dict(family="opt", vocab=50272)
LLAMA = dict(family="llama", vocab=32000)
MODELS = {
    "gpt2": Model("GPT-2 base", hidden=768, layers=12, ffn=3072, **GPT2),
    "gpt2-medium": Model("GPT-2 medium", hidden=1024, layers=24, ffn=4096, **GPT2),
    "gpt2-large": Model("GPT-2 large", hidden=1280, layers=36, ffn=5120, **GPT2),
    "gpt2-xl": Model("GPT-2 XL", hidden=1600, layers=48, ffn=6400, **GPT2),
    "opt-1.3b": Model("OPT-1.3B", hidden=2048, layers=24, ffn=8192, **OPT),
    "opt-2.7b": Model("OPT-2.7B", hidden=2560, layers=32, ffn=10240, **OPT),
    "opt-6.7b": Model("OPT-6.7B", hidden=4096, layers=32, ffn=16384, **OPT),
    "opt-13b": Model("OPT-13B", hidden=5120, layers=40, ffn=20480, **OPT),
    "llama-7b": Model("Llama-7B", hidden=4096, layers=32, ffn=11008, **LLAMA),
    "llama-13b": Model("Llama-13B", hidden=5120, layers=40, ffn=13824, **LLAMA),
    "llama-65b": Model("Llama-65B", hidden=8192, layers=80, ffn=22016, **LLAMA),
}


@dataclass(frozen=True)
class Plan:
    teacher: Model
    student: Model
    gpus: int
    gpu_gib: int
    zero: int  # 0 = no ZeRO (single GPU or DDP)
    micro_batch: int
    offload_optimizer: bool = False
    offload_param: bool = False
    seq: int = MAX_LENGTH

    @property
    def setup(self) -> str:
        z = "no ZeRO" if self.zero == 0 else f"ZeRO-{self.zero}"
        if self.offload_optimizer and self.offload_param:
            z += " + offload opt/param"
        elif self.offload_optimizer:
            z += " + offload opt"
        return f"{self.gpus}x{self.gpu_gib} GiB, {z}, B={self.micro_batch}"


def activations(m: Model, batch: int, seq: int, checkpointing: bool) -> float:
    per_layer_full = 34 * batch * seq * m.hidden
    if not checkpointing:
        return per_layer_full * m.layers
    return 2 * batch * seq * m.hidden * m.layers + per_layer_full


def memory(plan: Plan, teacher_ckpt: bool, student_ckpt: bool) -> dict[str, float]:
    """Bytes per GPU of each component, and per node on CPU."""
    t, s, n = plan.teacher, plan.student, plan.gpus
    ps, pt = s.params(), t.params()
    out: dict[str, float] = {}
    if plan.zero == 3:
        out["teacher_w"] = 0 if plan.offload_param else 2 * pt / n
    else:
        out["teacher_w"] = 2 * pt
    out["student_w"] = 0 if plan.offload_param else (2 * ps / n if plan.zero == 3 else 2 * ps)
    if plan.offload_optimizer:
        out["student_g"] = 0  # reduced into fp32 CPU buffers; only the communication buckets stay on the GPU
    else:
        out["student_g"] = 2 * ps / n if plan.zero >= 2 else 2 * ps
    out["optimizer"] = 0 if plan.offload_optimizer else (12 * ps / n if plan.zero >= 1 else 12 * ps)
    out["prompt"] = 16 * N_VIRTUAL * t.hidden
    out["act_teacher"] = activations(t, plan.micro_batch, plan.seq + N_VIRTUAL, teacher_ckpt)
    out["act_student"] = activations(s, plan.micro_batch, plan.seq, student_ckpt)
    out["logits"] = (
        4 * 2 * plan.micro_batch * plan.seq * s.vocab + 6 * 4 * min(CHUNK, plan.micro_batch * plan.seq) * s.vocab
    )
    live = max(2 * 2 * m.layer_params() + 2 * m.vocab * m.hidden for m in (s, t))
    out["zero3_live"] = live if plan.zero == 3 else 0
    out["kv_cache"] = 2 * 2 * plan.micro_batch * plan.seq * s.hidden * s.layers
    out["gen_gather"] = 2 * ps * (1 - 1 / n) if plan.zero == 3 else 0
    if plan.offload_param:
        out["gen_gather"] = 2 * ps  # the whole student comes from CPU for generation
    static = out["teacher_w"] + out["student_w"] + out["student_g"] + out["optimizer"] + out["prompt"]
    train = out["act_teacher"] + out["act_student"] + out["logits"] + out["zero3_live"]
    gen = out["kv_cache"] + out["gen_gather"]
    out["static"] = static
    out["peak"] = static + max(train, gen)
    cpu = 0.0
    if plan.offload_optimizer:
        cpu += (12 + 4) * ps
    if plan.offload_param:
        cpu += 2 * ps + (2 * pt if plan.zero == 3 else 0)
    out["cpu_node"] = cpu
    return out


def max_micro_batch(plan: Plan, teacher_ckpt: bool, student_ckpt: bool, headroom: float = 0.9) -> int:
    """Largest micro-batch whose estimated peak stays under `headroom` x the GPU's memory (0 if none)."""
    best = 0
    for b in range(1, 257):
        trial = Plan(**{**plan.__dict__, "micro_batch": b})
        if memory(trial, teacher_ckpt, student_ckpt)["peak"] > headroom * plan.gpu_gib * GiB:
            break
        best = b
    return best


def gib(x: float) -> str:
    if x == 0:
        return "0"
    if x < 0.01 * GiB:
        return f"{x / 2**20:.2f} MiB"
    if x < 0.1 * GiB:
        return f"{x / GiB:.2f}"
    return f"{x / GiB:.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


GPT2_PLANS = [
    Plan(MODELS["gpt2-xl"], MODELS[s], gpus=1, gpu_gib=24, zero=0, micro_batch=2)
    for s in ("gpt2", "gpt2-medium", "gpt2-large")
] + [Plan(MODELS["gpt2-xl"], MODELS["gpt2-large"], gpus=8, gpu_gib=24, zero=1, micro_batch=2)]

BIG_PLANS = []
for teacher, students in (("opt-13b", ("opt-1.3b", "opt-2.7b", "opt-6.7b")), ("llama-13b", ("llama-7b",))):
    for s in students:
        BIG_PLANS += [
            Plan(MODELS[teacher], MODELS[s], gpus=4, gpu_gib=80, zero=2, micro_batch=16, offload_optimizer=True),
            Plan(MODELS[teacher], MODELS[s], gpus=4, gpu_gib=80, zero=3, micro_batch=16),
            Plan(MODELS[teacher], MODELS[s], gpus=4, gpu_gib=80, zero=3, micro_batch=16, offload_optimizer=True,
                 offload_param=True),
        ]


# A teacher that fits no single GPU (130 GB of bf16 weights): only ZeRO-3 partitions it
# (promptkd_trainer/distributed.py).
HUGE_PLANS = [
    Plan(MODELS["llama-65b"], MODELS["llama-7b"], gpus=8, gpu_gib=80, zero=3, micro_batch=4),
    Plan(MODELS["llama-65b"], MODELS["llama-7b"], gpus=8, gpu_gib=80, zero=3, micro_batch=4, offload_optimizer=True,
         offload_param=True),
]


def report() -> str:
    parts = []
    parts.append("#### Parameter counts\n")
    rows = []
    for m in MODELS.values():
        rows.append(
            [m.name, str(m.hidden), str(m.layers), str(m.vocab), f"{m.params():,}", f"{N_VIRTUAL * m.hidden:,}"]
        )
    parts.append(table(["model", "hidden", "layers", "vocab", "parameters", f"prompt ({N_VIRTUAL} x hidden)"], rows))

    for title, plans in (
        (f"GPT-2 XL teacher, one GPU (B = official micro-batch 2, T = {MAX_LENGTH})", GPT2_PLANS),
        (f"13B teachers on 4 x 80 GiB (B = official micro-batch 16, T = {MAX_LENGTH})", BIG_PLANS),
        (f"65B teacher on 8 x 80 GiB, ZeRO-3 only (B = 4, T = {MAX_LENGTH})", HUGE_PLANS),
    ):
        parts.append(f"\n#### {title}: states per GPU (GiB)\n")
        rows = []
        for p in plans:
            m = memory(p, teacher_ckpt=True, student_ckpt=True)
            rows.append([
                f"{p.teacher.name} -> {p.student.name}", p.setup, gib(m["teacher_w"]), gib(m["student_w"]),
                gib(m["student_g"]), gib(m["optimizer"]), gib(m["prompt"]), gib(m["static"]), gib(m["cpu_node"]),
            ])
        parts.append(table(
            ["pair", "setup", "teacher weights", "student weights", "student grads", "optimizer", "prompt",
             "states total", "CPU per node"], rows))

        parts.append(f"\n#### {title}: activations and peaks per GPU (GiB)\n")
        rows = []
        for p in plans:
            no = memory(p, teacher_ckpt=False, student_ckpt=False)
            st = memory(p, teacher_ckpt=False, student_ckpt=True)
            yes = memory(p, teacher_ckpt=True, student_ckpt=True)
            rows.append([
                f"{p.teacher.name} -> {p.student.name}", p.setup,
                gib(no["act_teacher"]), gib(yes["act_teacher"]), gib(no["act_student"]), gib(yes["act_student"]),
                gib(no["logits"]), gib(no["kv_cache"] + no["gen_gather"]),
                gib(no["peak"]), gib(st["peak"]), gib(yes["peak"]),
                str(max_micro_batch(p, False, True)), str(max_micro_batch(p, True, True)),
            ])
        parts.append(table(
            ["pair", "setup", "teacher act.", "teacher act. (ckpt)", "student act.", "student act. (ckpt)", "logits",
             "generation", "peak, no ckpt", "peak, student ckpt", "peak, both ckpt", "max B, student ckpt",
             "max B, both ckpt"], rows))
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(report(), end="")
