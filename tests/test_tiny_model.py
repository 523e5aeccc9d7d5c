"""The tiny test model behaves like a real chat model: chat template, generation, adapters that change outputs."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_tiny_model_chats_and_adapters_differ(tiny_model_dir, tiny_adapters):
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    enc = tok.apply_chat_template([{"role": "user", "content": "hola"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    out_base = base.generate(**enc, max_new_tokens=8, do_sample=False)
    model = PeftModel.from_pretrained(base, tiny_adapters["a"], adapter_name="a")
    model.load_adapter(tiny_adapters["b"], adapter_name="b")
    model.eval()
    outs = {}
    for name in ("a", "b"):
        model.set_adapter(name)
        outs[name] = model.generate(**enc, max_new_tokens=8, do_sample=False)[0].tolist()
    assert outs["a"] != outs["b"] or outs["a"] != out_base[0].tolist()
    mask = tok.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                                   return_assistant_tokens_mask=True, return_dict=True)["assistant_masks"]
    assert 0 < sum(mask) < len(mask)
