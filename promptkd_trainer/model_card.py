# Copyright 2026 The promptkd-trainer contributors. Licensed under the Apache License, Version 2.0.
"""The model card: TRL's card for the student, plus the teacher it was distilled from and how to load the
`teacher_prompt/` adapter saved next to it."""

from __future__ import annotations

import os

from .checkpointing import PROMPT_ADAPTER_DIR, teacher_identity_name
from .files import check_writes_inside


def teacher_card_section(teacher, use_prompt: bool) -> str:
    """The model card's section on the teacher and the `teacher_prompt/` adapter (Markdown)."""
    name = teacher_identity_name(teacher)
    if not use_prompt:
        return f"\n## Teacher\n\nDistilled on-policy from the teacher `{name}` (no soft prompt).\n"
    n_tokens = teacher.active_peft_config.num_virtual_tokens
    return (
        f"\n## Teacher and soft prompt\n\nDistilled with PromptKD from the teacher `{name}`. The teacher's soft "
        f"prompt ({n_tokens} virtual tokens, trained with the student) is saved next to the student's weights in "
        f"`{PROMPT_ADAPTER_DIR}/`, as a PEFT prompt-tuning adapter for that teacher:\n\n```python\n"
        "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
        f'teacher = AutoModelForCausalLM.from_pretrained("{name}")\n'
        f'prompted_teacher = PeftModel.from_pretrained(teacher, "{PROMPT_ADAPTER_DIR}")\n```\n'
    )


class TeacherModelCard:
    """Trainer mixin (before the `Trainer` class in the bases) that adds [`teacher_card_section`] to TRL's model card.

    It expects the trainer's `teacher` and `use_prompt`.
    """

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None) -> None:
        """TRL's model card, plus the teacher and how to load the `teacher_prompt/` adapter saved with the student.

        Raises:
            `ValueError`: before anything is written, when `output_dir/README.md` is a symbolic link that points
            outside `output_dir`.
        """
        path = os.path.join(self.args.output_dir, "README.md")
        if self.is_world_process_zero():
            check_writes_inside(self.args.output_dir, path)
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero() and os.path.exists(path):
            with open(path, "a") as f:
                f.write(teacher_card_section(self.teacher, self.use_prompt))
