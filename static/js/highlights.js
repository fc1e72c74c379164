// Highlight suggestions on the stream dashboard (templates/streams/manage.html).
// "Clip it" asks for a clip of the suggestion's range (POST /api/v1/streams/<id>/clips/ with
// {title, session, start, end}), then marks the suggestion clipped; "Dismiss" dismisses it.
(() => {
  const list = document.getElementById("highlights");
  if (!list) return;
  const stream = list.dataset.stream;
  const csrf = () => {
    const field = document.querySelector("#highlights-csrf input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  };
  const post = (url, body) => fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(), Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const say = (item, text) => {
    const status = item.querySelector("[data-status]");
    if (status) status.textContent = text;
  };
  const errorText = async (response) => {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || body.detail || `error ${response.status}`;
    } catch {
      return `error ${response.status}`;
    }
  };
  list.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const item = button.closest("[data-suggestion]");
    const id = item.dataset.suggestion;
    const base = `/api/v1/streams/${stream}/highlights/${id}`;
    button.disabled = true;
    try {
      if (button.dataset.action === "dismiss") {
        const response = await post(`${base}/dismiss/`);
        if (!response.ok) throw new Error(await errorText(response));
        item.remove();
        return;
      }
      say(item, "Making the clip…");
      const clip = await post(`/api/v1/streams/${stream}/clips/`, {
        title: item.dataset.title,
        session: Number(item.dataset.session),
        start: item.dataset.start,
        end: item.dataset.end,
      });
      if (!clip.ok) throw new Error(await errorText(clip));
      await post(`${base}/clipped/`);
      say(item, "Clip requested.");
      item.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    } catch (error) {
      say(item, `Failed: ${error.message}`);
      button.disabled = false;
    }
  });
})();
