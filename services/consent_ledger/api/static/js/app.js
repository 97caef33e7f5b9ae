// The dashboard's shell: sign-in, navigation and the hash router.
// Views live in their own modules; each renders into a fresh element, so a view
// that finishes loading after the reader moved on writes into nothing visible.

import { ApiError, describe, get, session, whenUnauthorized } from "./api.js";
import { h, notice, replace } from "./dom.js";
import * as health from "./health.js";
import * as overview from "./overview.js";
import * as policy from "./policy.js";
import * as subject from "./subject.js";
import * as violations from "./violations.js";

const VIEWS = { overview, violations, subject, policy, health };

const signInSection = document.getElementById("sign-in");
const signInForm = document.getElementById("sign-in-form");
const signInError = document.getElementById("sign-in-error");
const tokenInput = document.getElementById("token");
const viewSection = document.getElementById("view");
const nav = document.getElementById("nav");
const sessionBox = document.getElementById("session");

/** "#/violations?rule=x" -> {name: "violations", rest: [], params}. */
export function currentRoute() {
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?", 2);
  const [name, ...rest] = path.split("/");
  return {
    name: VIEWS[name] ? name : "overview",
    rest: rest.map((part) => decodeURIComponent(part)),
    params: new URLSearchParams(query || ""),
  };
}

function showSignIn(message) {
  nav.hidden = true;
  sessionBox.hidden = true;
  viewSection.hidden = true;
  viewSection.replaceChildren();
  signInSection.hidden = false;
  signInError.textContent = message || "";
  tokenInput.value = "";
  tokenInput.focus();
}

let rendering = 0;

async function render() {
  if (!session.token) {
    showSignIn();
    return;
  }
  signInSection.hidden = true;
  nav.hidden = false;
  sessionBox.hidden = false;
  viewSection.hidden = false;
  const route = currentRoute();
  for (const link of nav.querySelectorAll("a")) {
    link.classList.toggle("current", link.dataset.view === route.name);
    if (link.dataset.view === route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const generation = ++rendering;
  const hash = window.location.hash;
  const root = h("div", { class: `view view-${route.name}` });
  replace(viewSection, root);
  viewSection.dataset.state = "loading";
  try {
    await VIEWS[route.name].render(root, route);
  } catch (error) {
    root.append(notice("error", `This view failed: ${error.message || error}`));
    console.error(error);
  }
  // Which address the view shows once loaded: what a test (or a person's
  // extension) can wait on, since the URL changes before the view does.
  if (generation === rendering) {
    viewSection.dataset.rendered = hash;
    viewSection.dataset.state = "ready";
  }
}

whenUnauthorized(() => {
  session.signOut();
  showSignIn("The API refused the token (401): sign in again.");
});

signInForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = tokenInput.value.trim();
  if (!token) return;
  session.signIn(token);
  signInError.textContent = "";
  // One cheap read says whether the API takes the token: a 401 signs out again
  // (see whenUnauthorized). A 403 means the token is valid but its role may not
  // list violations; the views say what that role may not see.
  try {
    await get("/v1/violations", { limit: 1 });
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    if (error instanceof ApiError && error.status === 429) {
      session.signOut();
      showSignIn(describe(error, "Sign-in"));
      return;
    }
  }
  document.getElementById("session-note").textContent = "Signed in";
  if (!window.location.hash) window.location.hash = "#/overview";
  else render();
});

document.getElementById("sign-out").addEventListener("click", () => {
  session.signOut();
  showSignIn("Signed out.");
});

window.addEventListener("hashchange", render);
if (session.token) document.getElementById("session-note").textContent = "Signed in";
render();
