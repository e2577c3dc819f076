# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""What the soft prompt learned: its nearest vocabulary tokens, its drift, and the divergences it was trained for.

The paper's claim (Section 3, Figure 1): the prompt makes the teacher a better target for *this* student, i.e. after
training KL(prompted teacher || student) falls below KL(teacher || student) on the student's own samples.
[`kl_probe`] measures both on held-out prompts, with fresh student samples.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import pad

from ..divergences import divergence
from ..generation import generate_answers
from ..teacher import plain_teacher_logits, prompt_parameter, prompted_teacher_logits
from .scoring import GENERATION_BATCH_SIZE
from .training import sft_dataset


def nearest_tokens(prompted, tokenizer, k: int = 3) -> list[list[str]]:
    """For each virtual token, the `k` vocabulary tokens whose input embeddings are closest in cosine similarity."""
    prompt = prompt_parameter(prompted).detach().float()
    table = prompted.get_base_model().get_input_embeddings().weight.detach().float()
    sim = torch.nn.functional.normalize(prompt, dim=-1) @ torch.nn.functional.normalize(table, dim=-1).T
    return [tokenizer.convert_ids_to_tokens(row.tolist()) for row in sim.topk(k, dim=-1).indices]


def prompt_drift(initial: torch.Tensor, prompted) -> float:
    """Relative change of the prompt, ||P_end - P_init|| / ||P_init|| (Frobenius)."""
    final = prompt_parameter(prompted).detach().float()
    return float((final - initial).norm() / initial.norm())


@torch.no_grad()
def kl_probe(student, prompted, tokenizer, prompts: list[str], *, max_new_tokens: int, seed: int) -> dict:
    """KL(prompted teacher || student) and KL(teacher || student), nats per answer token, on the student's samples.

    The student samples one answer per prompt (temperature 1, as PromptKD's training samples); both KLs are averaged
    over the answer tokens and their EOS, the positions PromptKD's losses cover.
    """
    answers = generate_answers(
        student, tokenizer, prompts, do_sample=True, seed=seed, batch_size=GENERATION_BATCH_SIZE,
        max_new_tokens=max_new_tokens,
    )
    rows = sft_dataset(tokenizer, prompts, answers)
    input_ids = pad([torch.tensor(r) for r in rows["input_ids"]], padding_value=tokenizer.pad_token_id)
    labels = pad([torch.tensor(r) for r in rows["labels"]], padding_value=-100)
    attention_mask = pad([torch.ones(len(r), dtype=torch.long) for r in rows["input_ids"]])
    mask = labels[:, 1:] != -100  # logits at t predict token t + 1
    student_logits = student(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]
    targets = {
        "kl_prompted_teacher_student": prompted_teacher_logits(prompted, input_ids, attention_mask),
        "kl_teacher_student": plain_teacher_logits(prompted, input_ids, attention_mask),
    }
    # divergence(p, q, "reverse_kl") is KL(p || q); here p is the teacher, q the student.
    return {
        name: float(divergence(logits[:, :-1], student_logits, "reverse_kl", mask=mask))
        for name, logits in targets.items()
    }
