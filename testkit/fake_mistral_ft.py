"""A loopback fake of Mistral's files + fine-tuning jobs endpoints, as `mistralai` (files) and plain HTTPS (jobs)
call them. A job goes QUEUED -> RUNNING -> SUCCESS (or FAILED_VALIDATION for a bad file) over `polls_to_finish`
GETs and then names an `ft:` model."""

from __future__ import annotations

import json
import time
import uuid

from aiohttp import web


class FakeMistralFineTuning:
    def __init__(self, *, api_key: str = "test-key", polls_to_finish: int = 2, fail: bool = False):
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.fail = fail
        self.files: dict[str, dict] = {}   # id -> {"filename", "purpose", "lines"}
        self.jobs: dict[str, dict] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/files", self._upload), web.post("/v1/fine_tuning/jobs", self._create),
                web.get("/v1/fine_tuning/jobs/{job_id}", self._get)]

    async def __aenter__(self) -> FakeMistralFineTuning:
        app = web.Application(middlewares=[self._auth])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"message": "Unauthorized", "code": 401}, status=401)
        return await handler(request)

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form["file"]
        lines = [json.loads(line) for line in upload.file.read().decode().splitlines() if line.strip()]
        file_id = str(uuid.uuid4())
        self.files[file_id] = {"filename": upload.filename, "purpose": form.get("purpose"), "lines": lines}
        return web.json_response({"id": file_id, "object": "file", "bytes": sum(len(json.dumps(x)) for x in lines),
                                  "created_at": int(time.time()), "filename": upload.filename,
                                  "purpose": form.get("purpose") or "fine-tune", "sample_type": "instruct",
                                  "source": "upload", "num_lines": len(lines)})

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        missing = [f["file_id"] for f in body.get("training_files", []) if f["file_id"] not in self.files]
        if missing or not body.get("model"):
            return web.json_response({"message": f"unknown files {missing} or no model"}, status=422)
        valid = all(isinstance(r.get("messages"), list) and r["messages"][-1]["role"] == "assistant"
                    for f in body["training_files"] for r in self.files[f["file_id"]]["lines"])
        job_id = str(uuid.uuid4())
        self.jobs[job_id] = {"id": job_id, "object": "job", "model": body["model"], "status": "QUEUED",
                             "training_files": [f["file_id"] for f in body["training_files"]],
                             "validation_files": body.get("validation_files", []),
                             "hyperparameters": body.get("hyperparameters", {}), "suffix": body.get("suffix"),
                             "fine_tuned_model": None, "created_at": int(time.time()), "_polls": 0,
                             "_valid": valid and not self.fail}
        return web.json_response(self._public(self.jobs[job_id]))

    async def _get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["job_id"])
        if job is None:
            return web.json_response({"message": "job not found"}, status=404)
        job["_polls"] += 1
        if job["status"] in ("QUEUED", "RUNNING"):
            if job["_polls"] >= self.polls_to_finish:
                if job["_valid"]:
                    job["status"] = "SUCCESS"
                    job["fine_tuned_model"] = f"ft:{job['model']}:{job['suffix'] or 'x'}:{job['id'][:8]}"
                    job["trained_tokens"] = 1234
                else:
                    job["status"], job["message"] = "FAILED_VALIDATION", "training file is not valid"
            else:
                job["status"] = "RUNNING"
        return web.json_response(self._public(job))

    @staticmethod
    def _public(job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}
