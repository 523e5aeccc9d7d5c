// Arena keyboard shortcuts: 1 = A, 2 = B, 3 = tie, 4 = both bad. Everything works without this file.
document.addEventListener("keydown", (event) => {
  if (event.target.matches("input, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  const ids = { "1": "pick-a", "2": "pick-b", "3": "pick-tie", "4": "pick-both-bad" };
  const button = document.getElementById(ids[event.key]);
  if (button) button.click();
});
// A vote button is pressed once: a double click must not send the same vote twice.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.sent) { event.preventDefault(); return; }
  form.dataset.sent = "1";
});
