"""The base layer every part may import: settings, their loading, and the errors users see."""
