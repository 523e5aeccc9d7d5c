"""LocalBackend: transformers + peft in this process. One worker thread owns the model (peft is not thread-safe):
requests queue to it and are decoded in batches, each row with its own adapter; adapters change between batches."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopbot.base import artifacts
from loopbot.base.errors import LoopbotError
from loopbot.serving.base import DEFAULT_SAMPLING, AdapterInfo, Finished, SamplingParams, StreamItem, TextChunk
from loopbot.serving.errors import BackendUnavailable, BadRequest, ModelNotFound, Overloaded, ServingError
from loopbot.serving.sampling import RowSampling, choose_tokens

log = logging.getLogger(__name__)

_STOP = object()
GREEDY_BELOW = 1e-5  # a temperature under this is greedy decoding


@dataclass(eq=False)
class _Request:
    messages: list[dict]
    adapter: str | None
    sampling: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody is listening any more
            self.cancelled.set()


@dataclass(eq=False)
class _Command:
    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass(eq=False)
class _Row:
    """One request while its batch decodes."""

    req: _Request
    prompt: list[int]
    max_new: int
    generator: Any = None
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters already streamed
    done: bool = False


def check_messages(messages: list[dict]) -> None:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {'role', 'content'} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                m.get("role") not in ("system", "user", "assistant"):
            raise BadRequest(f"message {i} must be {{'role': system|user|assistant, 'content': str}}, got {m!r:.80}")


class LocalBackend:
    """Serve a base model and its LoRA adapters from this process (CPU or GPU)."""

    name = "local"

    def __init__(self, model_path: str | Path | Callable[[], str | Path], *, model_name: str | None = None,
                 tokenizer: str | Path | None = None,
                 device: str = "auto", dtype: str = "auto", max_batch_size: int = 8, batch_wait_ms: float = 5.0,
                 threads: int | None = None, max_context: int = 2048, max_queue: int = 256,
                 artifact_cache: str | Path | None = None, store_options: dict | None = None):
        self.artifact_cache = Path(artifact_cache) if artifact_cache else None  # adapters fetched from a store
        self.store_options = store_options
        self._model_path = model_path  # a callable is resolved by the worker (e.g. a first-use conversion)
        self.model_path = "(resolved on first use)" if callable(model_path) else str(model_path)
        self.model_name = model_name or Path(self.model_path).name
        self.tokenizer_path = str(tokenizer) if tokenizer else None
        self.device_setting = device
        self.dtype_setting = dtype
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.threads = threads
        self.max_context = max_context
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue()
        self._backlog: collections.deque = collections.deque()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._adapters: dict[str, str] = {}  # name -> path, written by the worker only
        self._closed = False
        self.model = None
        self.tokenizer = None
        self.batches_run = 0  # batches started from an idle worker (rows that join a running batch do not count)
        self.widest_batch = 0  # the most cache columns (prompt, padding and reply tokens) a decode step attended to
        self._active: list[_Row] = []

    # ---- the async side -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (it loads the model); idempotent."""
        with self._start_lock:
            if self._closed:
                raise BackendUnavailable("the local backend was closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="loopbot-local-model", daemon=True)
                self._thread.start()

    async def ready(self) -> None:
        """Wait until the model is loaded (raises BackendUnavailable if it could not be)."""
        self.start()
        await asyncio.wrap_future(self._ready)

    async def stream(self, messages: list[dict], *, adapter: str | None = None,
                     sampling: SamplingParams = DEFAULT_SAMPLING) -> AsyncIterator[StreamItem]:
        check_messages(messages)
        if sampling.max_tokens <= 0:
            raise BadRequest("max_tokens must be positive")
        self.start()
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} requests are already waiting for the local model")
        req = _Request(list(messages), adapter, sampling, asyncio.get_running_loop(), asyncio.Queue())
        self._queue.put(req)
        try:
            while True:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            req.cancelled.set()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        self.start()
        cmd = _Command(fn)
        self._queue.put(cmd)
        return await asyncio.wrap_future(cmd.future)

    async def load_adapter(self, name: str, path: str) -> None:
        """Load the adapter at `path`: a directory, or an artifact store URI (s3://...) fetched into the cache
        first (verified; a version fetched before is not downloaded again)."""
        if artifacts.is_remote(path):
            if self.artifact_cache is None:
                raise ModelNotFound(f"cannot load {name!r} from {path}: this backend has no artifact cache")
            try:
                path = str(await asyncio.to_thread(artifacts.fetch, path, None, self.artifact_cache,
                                                   self.store_options))
            except LoopbotError as e:
                raise ModelNotFound(f"cannot load {name!r}: {e}") from None
        p = Path(path)
        if not (p / "adapter_config.json").is_file():
            raise ModelNotFound(f"no LoRA adapter at {path} (adapter_config.json missing)")
        await self._call(lambda: self._load_adapter(name, str(p)))

    async def unload_adapter(self, name: str) -> None:
        await self._call(lambda: self._unload_adapter(name))

    async def list_adapters(self) -> list[AdapterInfo]:
        return [AdapterInfo(name=n, path=p) for n, p in sorted(dict(self._adapters).items())]

    async def health(self) -> bool:
        if self._ready.done():
            return self._ready.exception() is None and self._thread is not None and self._thread.is_alive()
        return not self._closed

    async def aclose(self) -> None:
        with self._start_lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, thread.join)

    # ---- the worker -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._load_model()
            self._ready.set_result(None)
        except Exception as e:
            log.exception("could not load the model from %s", self.model_path)
            self._ready.set_exception(BackendUnavailable(f"could not load the model from {self.model_path}: {e}"))
        while True:
            item = self._next(None)
            if item is _STOP:
                self._fail_pending(BackendUnavailable("the local backend is shutting down"))
                return
            if self._ready.exception() is not None:
                self._fail(item, self._ready.exception())
                continue
            if isinstance(item, _Command):
                self._execute(item)
                continue
            self._backlog.appendleft(item)
            try:
                self._decode()
            except Exception as e:
                log.exception("decoding failed")
                for row in self._active:
                    if not row.done:
                        row.req.emit(ServingError(f"generation failed: {e}"))
                self._active = []

    def _next(self, timeout: float | None) -> Any:
        if self._backlog:
            return self._backlog.popleft()
        try:
            if timeout is None:
                return self._queue.get()
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _fail(self, item: Any, error: BaseException) -> None:
        if isinstance(item, _Request):
            item.emit(error)
        elif isinstance(item, _Command):
            item.future.set_exception(error)

    def _fail_pending(self, error: BaseException) -> None:
        while (item := self._next(0)) is not None:
            if item is not _STOP:
                self._fail(item, error)

    def _execute(self, cmd: _Command) -> None:
        import torch

        try:
            with torch.inference_mode(False):  # adapter weights must be normal tensors, even when loaded mid-batch
                result = cmd.fn()
            cmd.future.set_result(result)
        except BaseException as e:
            cmd.future.set_exception(e)

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.threads:
            torch.set_num_threads(self.threads)
        if callable(self._model_path):
            self.model_path = str(self._model_path())
        else:
            self.model_path = str(self._model_path)
        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.dtype_setting == "auto":
            dtype = torch.float32 if device == "cpu" else "auto"
        else:
            dtype = getattr(torch, self.dtype_setting)
        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path or self.model_path)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).to(device).eval()
        self.device = device
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else next(iter(self.eos_ids), 0)

    def _load_adapter(self, name: str, path: str) -> None:
        from peft import PeftModel

        if name in self._adapters:
            if Path(self._adapters[name]).resolve() == Path(path).resolve():
                return  # idempotent, as on vLLM
            raise BadRequest(f"adapter {name!r} is already loaded from {self._adapters[name]} "
                             "(load a new version under a new name)")
        try:
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
        except Exception as e:
            raise BadRequest(f"could not load adapter {name!r} from {path}: {e}") from e
        self.model.eval()
        self._adapters = {**self._adapters, name: path}

    def _unload_adapter(self, name: str) -> None:
        import warnings

        if name not in self._adapters:
            raise ModelNotFound(f"adapter {name!r} is not loaded")
        for row in self._active:  # only after the grace period: the router waits for in-flight requests first
            if row.req.adapter == name and not row.done:
                row.done = True
                row.req.emit(ModelNotFound(f"adapter {name!r} was unloaded while this reply was being written"))
        if len(self._adapters) == 1:  # the last one: back to the plain base model
            self.model = self.model.unload()
        else:
            with warnings.catch_warnings():  # "adapter X was active which is now deleted": we set it per batch
                warnings.simplefilter("ignore")
                self.model.delete_adapter(name)
        self._adapters = {n: p for n, p in self._adapters.items() if n != name}

    # ---- decoding -------------------------------------------------------------------------------------------
    def _prepare(self, req: _Request) -> _Row | None:
        import torch

        if req.cancelled.is_set():
            return None
        if req.adapter is not None and req.adapter not in self._adapters:
            req.emit(ModelNotFound(f"adapter {req.adapter!r} is not loaded"))
            return None
        try:
            text = self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:
            req.emit(BadRequest(f"could not format the messages: {e}"))
            return None
        prompt = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        room = self.max_context - len(prompt)
        if room <= 0:
            req.emit(BadRequest(f"the prompt has {len(prompt)} tokens; this model takes at most {self.max_context}"))
            return None
        row = _Row(req, prompt, min(req.sampling.max_tokens, room))
        if req.sampling.temperature >= GREEDY_BELOW:
            row.generator = torch.Generator(device=self.device)
            if req.sampling.seed is not None:
                row.generator.manual_seed(req.sampling.seed)
            else:
                row.generator.seed()
        return row

    def _forward(self, rows: list[_Row], **inputs):
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            return self.model(**inputs, use_cache=True)
        names = [r.req.adapter for r in rows]
        if len(set(names)) == 1:
            if names[0] is None:
                with self.model.disable_adapter():
                    return self.model(**inputs, use_cache=True)
            self.model.set_adapter(names[0])
            return self.model(**inputs, use_cache=True)
        return self.model(**inputs, use_cache=True, adapter_names=[n or "__base__" for n in names])

    def _take_work(self, active: int, deadline: float | None) -> list[_Request]:
        """Between two decode steps: run queued commands, and take requests up to the free batch slots
        (waiting until `deadline` for the first batch to fill)."""
        taken: list[_Request] = []
        while len(taken) < self.max_batch_size - active:
            timeout = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
            item = self._next(timeout)
            if item is None:
                return taken
            if item is _STOP:
                self._backlog.appendleft(item)
                return taken
            if isinstance(item, _Command):
                self._execute(item)
            else:
                taken.append(item)
        # the batch is full: commands further back in the queue (adapter loads for a swap) run now anyway
        while True:
            try:
                self._backlog.append(self._queue.get_nowait())
            except queue.Empty:
                break
        for item in [i for i in self._backlog if isinstance(i, _Command)]:
            self._backlog.remove(item)
            self._execute(item)
        return taken

    def _prefill(self, rows: list[_Row]):
        import torch
        from transformers import DynamicCache

        width = max(len(r.prompt) for r in rows)
        input_ids = torch.tensor([[self.pad_id] * (width - len(r.prompt)) + r.prompt for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._forward(rows, input_ids=input_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache)
        return cache, mask, positions[:, -1:], out.logits[:, -1, :].float()

    @staticmethod
    def _mergeable(cache) -> bool:
        from transformers.cache_utils import DynamicLayer

        return all(type(layer) is DynamicLayer for layer in cache.layers)

    @staticmethod
    def _merge(cache_a, mask_a, cache_b, mask_b):
        """Stack two batches' KV caches and masks (left-padding the shorter one): new rows join a running batch."""
        import torch

        def pad(x, n: int, dim: int):
            if n == 0:
                return x
            shape = list(x.shape)
            shape[dim] = n
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        ta, tb = mask_a.shape[1], mask_b.shape[1]
        t = max(ta, tb)
        for la, lb in zip(cache_a.layers, cache_b.layers, strict=False):
            la.keys = torch.cat([pad(la.keys, t - ta, 2), pad(lb.keys, t - tb, 2)], dim=0)
            la.values = torch.cat([pad(la.values, t - ta, 2), pad(lb.values, t - tb, 2)], dim=0)
        return cache_a, torch.cat([pad(mask_a, t - ta, 1), pad(mask_b, t - tb, 1)], dim=0)

    @staticmethod
    def _crop_padding(cache, mask):
        """Drop the leading cache columns that no remaining row attends to. A batch that keeps running while rows
        come and go grows one column per step, and each joining row is left-padded to that width: without this,
        an hour of steady traffic decodes over thousands of padding columns (slower every minute, more memory)."""
        start = int(mask.any(dim=0).int().argmax())  # the first column some row uses
        if start == 0:
            return mask
        for layer in cache.layers:
            layer.keys = layer.keys[:, :, start:, :]
            layer.values = layer.values[:, :, start:, :]
        return mask[:, start:]

    def _decode(self) -> None:
        """Continuous batching: decode the active rows one token at a time; between two steps run commands and
        let new requests join (their prompt is prefilled, then their cache is stacked onto the batch's)."""
        import torch

        rows: list[_Row] = []
        self._active = rows
        cache = mask = last = None
        tokens: list[int] = []
        deadline: float | None = time.monotonic() + self.batch_wait_s
        with torch.inference_mode():
            while True:
                can_join = not rows or (cache is not None and self._mergeable(cache))
                admitted = self._take_work(len(rows), deadline) if can_join else []
                deadline = None
                keep = [i for i, r in enumerate(rows) if not r.done and not r.req.cancelled.is_set()]
                if len(keep) < len(rows):  # drop finished, cancelled and failed rows from the batch and its cache
                    index = torch.tensor(keep, device=self.device, dtype=torch.long)
                    cache.batch_select_indices(index)
                    rows = [rows[i] for i in keep]
                    mask, last, tokens = mask[index], last[index], [tokens[i] for i in keep]
                    if rows and self._mergeable(cache):
                        mask = self._crop_padding(cache, mask)
                fresh = [r for r in (self._prepare(req) for req in admitted) if r is not None]
                if fresh:
                    self.batches_run += not rows
                    n_cache, n_mask, n_last, logits = self._prefill(fresh)
                    n_tokens = self._choose(fresh, logits)
                    for row, token in zip(fresh, n_tokens, strict=False):
                        self._advance(row, token)
                    live = [i for i, r in enumerate(fresh) if not r.done]
                    if live:
                        if len(live) < len(fresh):
                            index = torch.tensor(live, device=self.device, dtype=torch.long)
                            n_cache.batch_select_indices(index)
                            n_mask, n_last = n_mask[index], n_last[index]
                        fresh, n_tokens = [fresh[i] for i in live], [n_tokens[i] for i in live]
                        if rows:
                            cache, mask = self._merge(cache, mask, n_cache, n_mask)
                            last = torch.cat([last, n_last], dim=0)
                        else:
                            cache, mask, last = n_cache, n_mask, n_last
                        rows = rows + fresh
                        tokens = tokens + n_tokens
                self._active = rows
                if not rows:
                    if any(isinstance(i, _Request) for i in self._backlog):
                        continue
                    return
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                self.widest_batch = max(self.widest_batch, mask.shape[1])
                last = last + 1
                out = self._forward(rows, input_ids=torch.tensor(tokens, device=self.device).unsqueeze(1),
                                    attention_mask=mask, position_ids=last, past_key_values=cache)
                tokens = self._choose(rows, out.logits[:, -1, :].float())
                for row, token in zip(rows, tokens, strict=False):
                    self._advance(row, token)

    def _choose(self, rows: list[_Row], logits) -> list[int]:
        return choose_tokens(logits, [
            RowSampling(r.req.sampling.temperature, r.req.sampling.top_p, r.req.sampling.repetition_penalty,
                        r.prompt + r.ids if r.req.sampling.repetition_penalty != 1.0 else [], r.generator)
            for r in rows])

    def _advance(self, row: _Row, token: int) -> None:
        if row.req.cancelled.is_set():
            row.done = True
            return
        stop = token in self.eos_ids
        if not stop:
            row.ids.append(token)
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            if len(text) > row.sent and not text.endswith("\ufffd"):
                row.req.emit(TextChunk(text[row.sent:]))
                row.sent = len(text)
        if stop or len(row.ids) >= row.max_new:
            row.done = True
            text = self.tokenizer.decode(row.ids, skip_special_tokens=True)
            if len(text) > row.sent:
                row.req.emit(TextChunk(text[row.sent:]))
            row.req.emit(Finished("stop" if stop else "length", len(row.prompt), len(row.ids) + int(stop),
                                  row.req.adapter or self.model_name))
