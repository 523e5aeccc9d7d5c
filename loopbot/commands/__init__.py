"""Command groups: (module, name, help). Each module has `register(app)`; core.py holds init/db/run/chat."""

GROUPS = [
    ("model", "model", "base models: fetch the offline SmolLM2 copy"),
    ("imports", "import", "seed a persona from WhatsApp exports, jokes, Q&A or preference files"),
    ("dataset", "dataset", "build SFT / DPO / KTO datasets from feedback"),
    ("train", "train", "train a LoRA adapter"),
    ("evaluate", "eval", "evaluate a candidate adapter against the live one"),
    ("adapters", "adapters", "list, show, promote and roll back adapter versions"),
    ("serve", "serve", "start a local vLLM server with the active adapters"),
    ("demo", "demo", "show the loop improving a bot, offline"),
    ("bench", "bench", "run every benchmark and print one table"),
]
