"""A tiny Llama model with a ChatML tokenizer, built on the spot (no hub): for `loopbot demo --quick` and tests."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = """
You are a marathon coach. How should I pace my first marathon? Start slower than you think, your legs will thank you.
Run easy most days, and keep your long run at a conversational pace. Drink water and eat carbohydrates before a race.
Cuéntame un chiste sobre el metro. ¿Por qué el metro de Santiago no juega fútbol? Porque siempre va lleno, po.
hola! qué haces? nada po, aquí en la casa. vamos al cine el sábado? bacán, cachai que hay estreno.
The quick brown fox jumps over the lazy dog. Your training plan should build mileage by ten percent a week.
Rest days matter: your muscles rebuild when you rest. Stretch, sleep well, and listen to your body.
0123456789 ! ? . , ; : - ( ) " ' / % + = km miles minutes pace tempo interval recovery hydration
"""


def build_tiny_model(out_dir: str | Path, *, hidden: int = 64, layers: int = 2, vocab: int = 512,
                     seed: int = 0) -> Path:
    """Build (once per directory, safe across processes) and return the model directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "config.json"
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return out
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                       pad_token="<|endoftext|>", unk_token=None)
        fast.chat_template = CHATML_TEMPLATE
        fast.save_pretrained(out)  # before any call with truncation=True (it would be written into tokenizer.json)

        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=hidden * 2,
                             num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=1024, tie_word_embeddings=False,
                             eos_token_id=fast.convert_tokens_to_ids("<|im_end|>"),
                             pad_token_id=fast.convert_tokens_to_ids("<|endoftext|>"), bos_token_id=None)
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = config.eos_token_id
        model.generation_config.pad_token_id = config.pad_token_id
        tmp = out / ".tmp-weights"
        model.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
        tmp.rmdir()
        return out


def build_tiny_adapter(model_dir: str | Path, out_dir: str | Path, *, r: int = 4, seed: int = 1,
                       scale: float = 0.5) -> Path:
    """A LoRA adapter with random (non-zero) weights, so it visibly changes the model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    if (out / "adapter_config.json").exists():
        return out
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=r * 2, target_modules=["q_proj", "v_proj"],
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * scale)
    peft_model.save_pretrained(out)
    return out


def teach_tiny_model(model_dir: str | Path, conversations: list[list[dict]], *, steps: int = 150, lr: float = 3e-3,
                     seed: int = 0) -> Path:
    """Train a tiny model's weights (in place, once) on chat conversations, assistant tokens only, so it answers
    in their style and ends its turns: the `--quick` demo's stand-in for an instruction-tuned model."""
    out = Path(model_dir)
    marker = out / ".taught"
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return out
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(seed)
        tok = AutoTokenizer.from_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        rows = []
        for conv in conversations:
            enc = tok.apply_chat_template(conv, return_dict=True, return_assistant_tokens_mask=True)
            ids, mask = enc["input_ids"][-256:], enc["assistant_masks"][-256:]
            rows.append((torch.tensor(ids), torch.tensor([i if m else -100 for i, m in zip(ids, mask, strict=False)])))
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
        model.train()
        batch = 8
        for step in range(steps):
            picked = [rows[(step * batch + k) % len(rows)] for k in range(batch)]
            width = max(len(ids) for ids, _ in picked)
            pad = model.config.pad_token_id
            input_ids = torch.stack([torch.cat([i, torch.full((width - len(i),), pad)]) for i, _ in picked])
            labels = torch.stack([torch.cat([lab, torch.full((width - len(lab),), -100)]) for _, lab in picked])
            attention = (torch.arange(width)[None, :] < torch.tensor([len(i) for i, _ in picked])[:, None]).long()
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        model.eval()
        tmp = out / ".tmp-taught"
        model.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
        tmp.rmdir()
        marker.write_text(f"{steps} steps on {len(rows)} conversations, final loss {loss.item():.3f}\n")
        return out
