"""Reading the hidden fields of our pages' forms, as a browser would submit them."""

from __future__ import annotations

import re


def hidden_fields(html: str, form_action: str | None = None) -> dict[str, str]:
    """name -> value of the hidden inputs (of the first form posting to `form_action`, if given)."""
    if form_action:
        m = re.search(r'<form[^>]*action="' + re.escape(form_action) + r'"[^>]*>(.*?)</form>', html, re.DOTALL)
        assert m, f"no form posting to {form_action}"
        html = m.group(1)
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
