// Drives the demo page in headless Chromium (Debian's chromium through playwright-core; no
// browser is downloaded), as a newcomer would use it: match alice and bob, see both online,
// alice types (bob sees it) and sends, bob sees the exact text and answers. Saves a screenshot
// of the conversation, and one (<name>-typing.png) while bob sees alice typing.
//
//   node e2e/demo.mjs <page url> <screenshot.png>
//
// Run by the Rust browser test (tests/e2e/browser.rs) against the real system. Exits 0 when every
// step passed; otherwise prints the failed step and the page's console, and saves the page as it
// was next to the screenshot (<name>.failure.png).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node e2e/demo.mjs <page url> <screenshot.png>");
  process.exit(64);
}
const STEP_MS = 15_000;
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const profile = await mkdtemp(join(tmpdir(), "switchboard-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: FLAGS,
  viewport: { width: 1200, height: 720 },
});
const page = browser.pages()[0] ?? (await browser.newPage());
const console_ = [];
page.on("console", (message) => console_.push(`[${message.type()}] ${message.text()}`));
page.on("pageerror", (error) => console_.push(`[pageerror] ${error.message}`));

const alice = page.getByTestId("pane-alice");
const bob = page.getByTestId("pane-bob");
let step = "";

/** Waits for `locator` to show, naming the step for the failure message. */
async function see(what, locator) {
  step = what;
  await locator.waitFor({ state: "visible", timeout: STEP_MS });
}

/** Waits for `pane`'s typing indicator to be empty. */
async function typingCleared(what, pane) {
  step = what;
  const selector = `[data-testid=pane-${pane}] [data-testid=typing]`;
  await page.waitForFunction((s) => document.querySelector(s)?.textContent === "", selector, { timeout: STEP_MS });
}

try {
  step = "open the page";
  await page.goto(url, { timeout: STEP_MS });
  await see("alice connects", alice.getByTestId("connection").getByText("connected", { exact: true }));
  await see("bob connects", bob.getByTestId("connection").getByText("connected", { exact: true }));

  step = "press Match";
  await page.getByTestId("match").click();
  await see("the match is published", page.getByTestId("match-status").getByText("match published"));
  await see("alice gets the match notification", alice.getByTestId("notifications").getByText("It's a match!"));
  await see("bob gets the match notification", bob.getByTestId("notifications").getByText("It's a match!"));
  await see("alice can write", alice.locator("[data-testid=composer]:enabled"));
  await see("bob sees alice online", bob.getByTestId("presence").getByText("alice online", { exact: true }));
  await see("alice sees bob online", alice.getByTestId("presence").getByText("bob online", { exact: true }));

  const hello = "Hi bob! Coffee at five?";
  step = "alice types";
  await alice.getByTestId("composer").pressSequentially(hello, { delay: 15 });
  await see("bob sees alice typing", bob.getByTestId("typing").getByText("alice is typing…"));
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-typing.png"), fullPage: true });
  step = "alice sends";
  await alice.getByTestId("composer").press("Enter");
  await see("bob sees alice's message", bob.getByTestId("messages").getByText(hello, { exact: true }));
  await see("alice sees her own message", alice.getByTestId("messages").getByText(hello, { exact: true }));
  await typingCleared("bob no longer sees alice typing", "bob");

  const answer = "Sure, see you there.";
  step = "bob answers";
  await bob.getByTestId("composer").fill(answer);
  await bob.getByTestId("composer").press("Enter");
  await see("alice sees bob's answer", alice.getByTestId("messages").getByText(answer, { exact: true }));
  await typingCleared("alice no longer sees bob typing", "alice");

  step = "take the screenshot";
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`ok: ${screenshot}`);
} catch (error) {
  console.error(`failed at "${step}": ${error.message}`);
  console.error(`page console:\n${console_.join("\n") || "(empty)"}`);
  await page.screenshot({ path: screenshot.replace(/\.png$/, ".failure.png"), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  await browser.close();
  await rm(profile, { recursive: true, force: true });
}
