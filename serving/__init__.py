"""Model serving: one interface (serving.base.Backend), three backends (local, vllm, mistral), and hot swaps."""
