// The rating app's one script (both modes): every answer is queued and sent in order, one request (one SQLite
// transaction) per answer; the page shows the answers as given at once and says when they are saved. Every text
// from the round (prompts, names, the rubric) goes into the page as text (textContent, title), never as markup.
"use strict";
(() => {
  const state = JSON.parse(document.getElementById("state").textContent);
  const $ = id => document.getElementById(id);
  const rater = state.rater, candidates = state.candidates, prompts = state.prompts;
  const grades = state.rubric.style.grades;  // "1".."5" -> what the grade looks like
  const confirmed = Object.assign({}, state.ratings);  // file_name -> {aligned, style}: what the server holds
  const queue = [];  // answers given and not yet confirmed, in order
  let sending = false, saves = 0, failures = 0, lastError = null, everyone = null, progressTimer = null;

  // ------------------------------------------------------------------------------------------ answers and saving
  function view(file) {  // what the rater has answered: the server's row with the answers in flight applied
    const r = Object.assign({aligned: null, style: null}, confirmed[file]);
    for (const op of queue) {
      if (op.file_name !== file) continue;
      if (op.aligned !== undefined) r.aligned = op.aligned;
      if (op.style !== undefined) r.style = op.style;
      if (op.aligned_if_unset !== undefined && r.aligned === null) r.aligned = op.aligned_if_unset;
    }
    return r;
  }
  const complete = r => r.aligned !== null && r.style !== null;
  const done = index => complete(view(candidates[index].file_name));

  function answer(file, values) {
    queue.push(Object.assign({file_name: file}, values));
    showStatus();
    render();
    pump();
  }

  async function pump() {
    if (sending) return;
    sending = true;
    while (queue.length) {
      const op = queue[0];
      try {
        const response = await fetch("api/rate", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify(Object.assign({rater: rater}, op))});
        if (!response.ok) throw new Error(await response.text());
        const row = await response.json();
        confirmed[op.file_name] = {aligned: row.aligned, style: row.style};
        saves += 1;
        lastError = null;
      } catch (err) {
        failures += 1;
        lastError = err.message || String(err);
      }
      queue.shift();
      showStatus();
      render();
    }
    sending = false;
    refreshEveryone();
  }

  function showStatus() {
    const body = document.body.dataset;
    body.pending = String(queue.length);
    body.saves = String(saves);
    body.failures = String(failures);
    $("saved").textContent = lastError !== null ? "NOT saved: " + lastError
      : queue.length ? "saving (" + queue.length + ")"
      : failures ? "saved (" + failures + " earlier answer(s) were NOT saved: reload to see what is kept)"
      : saves ? "saved" : "saved as you give them";
  }

  // --------------------------------------------------------------------------------------------------- progress
  function refreshEveryone() {
    if (progressTimer !== null) return;
    progressTimer = setTimeout(async () => {
      progressTimer = null;
      try {
        const response = await fetch("progress?rater=" + encodeURIComponent(rater));
        if (response.ok) { everyone = await response.json(); showProgress(); }
      } catch (err) { /* the next answer tries again */ }
    }, 250);
  }

  function showProgress() {
    const k = currentPrompt(), items = prompts[k].items;
    const ratedHere = items.filter(done).length;
    $("progress-prompt").textContent = "prompt " + (k + 1) + "/" + prompts.length + ": " + ratedHere + " of " +
      items.length + " rated";
    let mine = 0;
    for (let i = 0; i < candidates.length; i++) if (done(i)) mine += 1;
    const promptsDone = prompts.filter(p => p.items.every(done)).length;
    $("progress-you").textContent = "you: " + mine + "/" + candidates.length + " rated (" + promptsDone + " of " +
      prompts.length + " prompts done)";
    if (everyone) {
      const others = everyone.raters.filter(name => name !== rater).length;
      $("progress-all").textContent = "all raters: " + everyone.rated + "/" + everyone.candidates +
        " rated by someone, " + everyone.ratings + " ratings from " + everyone.raters.length + " rater(s)" +
        (others ? " (" + others + " besides you)" : "");
    }
  }

  // ------------------------------------------------------------------------------------------------ the keyboard
  const typing = e => ["INPUT", "SELECT", "TEXTAREA"].includes(e.target.tagName);
  const plain = e => !e.ctrlKey && !e.metaKey && !e.altKey;
  const grade = e => e.key.length === 1 && "12345".includes(e.key) ? Number(e.key) : null;
  const keepFocus = element => element.addEventListener("mousedown", e => e.preventDefault());

  // ---------------------------------------------------------------------------------------- one at a time mode
  let index = state.start;
  function currentPrompt() { return state.mode === "grid" ? page : candidates[index].prompt; }

  function renderOne() {
    const c = candidates[index], r = view(c.file_name);
    const image = $("image"), src = "image/" + encodeURIComponent(c.file_name);
    if (image.getAttribute("src") !== src) image.setAttribute("src", src);
    $("prompt").textContent = prompts[c.prompt].text;
    $("aligned").textContent = r.aligned === 1 ? "yes" : r.aligned === 0 ? "no" : "-";
    $("style").textContent = r.style ? String(r.style) : "-";
    $("style").title = r.style ? grades[String(r.style)] : "";
    $("position").textContent = (index + 1) + " of " + candidates.length;
    $("switch-mode").setAttribute("href", gridHref(c.prompt, c.file_name));
  }

  function keyOne(e) {
    const c = candidates[index], g = grade(e);
    let given = false;
    if (e.key === "y") { answer(c.file_name, {aligned: 1}); given = true; }
    else if (e.key === "n") { answer(c.file_name, {aligned: 0}); given = true; }
    else if (g !== null) { answer(c.file_name, {style: g}); given = true; }
    else if (e.key === "ArrowRight" && index < candidates.length - 1) index += 1;
    else if (e.key === "ArrowLeft" && index > 0) index -= 1;
    else if (e.key === "m") { location.href = gridHref(c.prompt, c.file_name); return; }
    else return;
    e.preventDefault();
    if (given && complete(view(c.file_name)) && index < candidates.length - 1) index += 1;
    render();
  }

  // ------------------------------------------------------------------------------------------------- grid mode
  let page = state.mode === "grid" ? candidates[state.start].prompt : 0;
  let focus = state.mode === "grid" ? prompts[page].items.indexOf(state.start) : 0;
  let built = -1;

  const gridHref = (k, file) => "grid?rater=" + encodeURIComponent(rater) + "&prompt=" + (k + 1) +
    (file ? "&at=" + encodeURIComponent(file) : "");
  const oneHref = file => "./?rater=" + encodeURIComponent(rater) + "&at=" + encodeURIComponent(file);

  function toggle(file) {
    const r = view(file);
    answer(file, {aligned: r.aligned === 1 ? 0 : 1});
  }
  function gradeTile(file, g) { answer(file, {style: g, aligned_if_unset: 0}); }

  function build() {
    const grid = $("grid");
    grid.replaceChildren();
    prompts[page].items.forEach((i, k) => {
      const file = candidates[i].file_name;
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.id = "tile-" + k;
      tile.dataset.file = file;
      const image = document.createElement("img");
      image.className = "tile-image";
      image.alt = "candidate " + (k + 1);
      image.src = "image/" + encodeURIComponent(file);
      image.addEventListener("click", () => { focus = k; toggle(file); });
      const row = document.createElement("div");
      row.className = "tile-answer";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "toggle";
      button.tabIndex = -1;
      button.textContent = "aligned?";
      keepFocus(button);
      button.addEventListener("click", () => { focus = k; toggle(file); });
      const shown = document.createElement("span");
      shown.className = "aligned-state";
      row.append(button, shown);
      const buttons = document.createElement("div");
      buttons.className = "grades";
      for (let g = 1; g <= 5; g++) {
        const b = document.createElement("button");
        b.type = "button";
        b.tabIndex = -1;
        b.className = "grade";
        b.dataset.grade = String(g);
        b.textContent = String(g);
        b.title = g + ": " + grades[String(g)];
        keepFocus(b);
        b.addEventListener("click", () => { focus = k; gradeTile(file, g); });
        buttons.append(b);
      }
      tile.append(image, row, buttons);
      grid.append(tile);
    });
    const select = $("prompt-select");
    if (!select.options.length) {
      prompts.forEach((p, k) => {
        const option = document.createElement("option");
        option.value = String(k);
        select.append(option);
      });
    }
    built = page;
  }

  function renderGrid() {
    if (built !== page) build();
    const items = prompts[page].items;
    items.forEach((i, k) => {
      const file = candidates[i].file_name, r = view(file), tile = $("tile-" + k);
      tile.classList.toggle("aligned", r.aligned === 1);
      tile.classList.toggle("not-aligned", r.aligned === 0);
      tile.classList.toggle("focused", k === focus);
      tile.classList.toggle("pending", queue.some(op => op.file_name === file));
      tile.dataset.aligned = r.aligned === null ? "" : String(r.aligned);
      tile.dataset.style = r.style === null ? "" : String(r.style);
      tile.querySelector(".aligned-state").textContent =
        r.aligned === 1 ? "aligned" : r.aligned === 0 ? "not aligned" : "unmarked";
      tile.querySelector(".toggle").setAttribute("aria-pressed", String(r.aligned === 1));
      for (const b of tile.querySelectorAll(".grade")) {
        b.setAttribute("aria-pressed", String(r.style === Number(b.dataset.grade)));
      }
    });
    $("prompt").textContent = prompts[page].text;
    $("prompt-number").textContent = (page + 1) + "/" + prompts.length;
    const select = $("prompt-select");
    prompts.forEach((p, k) => {
      const text = (k + 1) + ". " + p.text + " (" + p.items.filter(done).length + "/" + p.items.length + ")";
      if (select.options[k].textContent !== text) select.options[k].textContent = text;
    });
    select.value = String(page);
    const all = items.every(done);
    $("grid-done").textContent = all ? "All " + items.length + " rated" +
      (page < prompts.length - 1 ? ": Enter for the next prompt." : " (the last prompt).") : "";
    const file = candidates[items[focus]].file_name;
    $("switch-mode").setAttribute("href", oneHref(file));
    const url = gridHref(page, null);
    if (location.search !== url.slice(4)) history.replaceState(null, "", url);
  }

  function goTo(k) {
    if (k < 0 || k >= prompts.length || k === page) return;
    page = k;
    const items = prompts[page].items, open = items.findIndex(i => !done(i));
    focus = open < 0 ? 0 : open;
    render();
    window.scrollTo(0, 0);
  }

  function columns() {
    const tracks = getComputedStyle($("grid")).gridTemplateColumns.split(" ").filter(Boolean);
    return Math.max(1, tracks.length);
  }

  function keyGrid(e) {
    const items = prompts[page].items, file = candidates[items[focus]].file_name, g = grade(e);
    if (e.key === "a" || e.key === " ") toggle(file);
    else if (g !== null) {
      gradeTile(file, g);
      if (focus < items.length - 1) focus += 1;
    }
    else if (e.key === "ArrowRight") focus = Math.min(items.length - 1, focus + 1);
    else if (e.key === "ArrowLeft") focus = Math.max(0, focus - 1);
    else if (e.key === "ArrowDown") focus = Math.min(items.length - 1, focus + columns());
    else if (e.key === "ArrowUp") focus = Math.max(0, focus - columns());
    else if ((e.key === "Enter" && !e.shiftKey) || e.key === "PageDown") { e.preventDefault(); goTo(page + 1); return; }
    else if ((e.key === "Enter" && e.shiftKey) || e.key === "PageUp") { e.preventDefault(); goTo(page - 1); return; }
    else if (e.key === "m") { location.href = oneHref(file); return; }
    else return;
    e.preventDefault();
    render();
    $("tile-" + focus).scrollIntoView({block: "nearest"});
  }

  // ----------------------------------------------------------------------------------------------------- wiring
  function render() {
    if (state.mode === "grid") renderGrid(); else renderOne();
    showProgress();
  }
  document.addEventListener("keydown", e => {
    if (typing(e) || !plain(e)) return;
    if (state.mode === "grid") keyGrid(e); else keyOne(e);
  });
  if (state.mode === "grid") {
    keepFocus($("prev-prompt"));
    keepFocus($("next-prompt"));
    $("prev-prompt").addEventListener("click", () => goTo(page - 1));
    $("next-prompt").addEventListener("click", () => goTo(page + 1));
    $("prompt-select").addEventListener("change", e => { goTo(Number(e.target.value)); e.target.blur(); });
  } else if (new URLSearchParams(location.search).has("at")) {
    // Opened at one candidate (from the grid): a reload should resume at the first unrated one, as always.
    history.replaceState(null, "", "./?rater=" + encodeURIComponent(rater));
  }
  render();
  showStatus();
  refreshEveryone();
})();
