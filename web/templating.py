"""The page templates: built once per app, rendered by the routes (through deps.PageDep) and the error handler."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).parent / "templates"


def make_templates(personas: dict) -> Jinja2Templates:
    """The Jinja2 templates, with the configured personas available to every page (the navigation lists them)."""
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    templates.env.globals["personas"] = personas
    return templates


def render(templates: Jinja2Templates, request: Request, template: str, status_code: int = 200,
           headers: dict | None = None, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code, headers=headers)
