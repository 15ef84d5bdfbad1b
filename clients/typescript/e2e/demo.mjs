// Drives the demo page in headless Chromium (Debian's chromium through playwright-core; no
// browser is downloaded), as a newcomer would use it: match alice and bob, see both online,
// alice types (bob sees it) and sends, bob sees the exact text and answers. Saves a screenshot
// of the conversation, and one (<name>-typing.png) while bob sees alice typing.
//
// With --rematch it goes on: alice presses "Unmatch" (both panes close the conversation: no
// message left in view, nothing to write in, the match's notification marked unmatched), then
// "Match" again (a new matchId and an empty conversation in both panes, in which a message goes
// each way); screenshots <name>-unmatched.png and <name>-rematched.png. In this mode the page
// must also show no error and log no console error from start to end.
//
//   node e2e/demo.mjs <page url> <screenshot.png> [--rematch]
//
// Run by the Rust tests against the real system: tests/e2e/browser.rs, and with --rematch the
// newcomer's walk (tests/e2e/newcomer.rs). Exits 0 when every step passed; otherwise prints the
// failed step and the page's console, and saves the page as it was next to the screenshot
// (<name>.failure.png).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

const [url, screenshot, mode] = process.argv.slice(2);
if (!url || !screenshot || (mode !== undefined && mode !== "--rematch")) {
  console.error("usage: node e2e/demo.mjs <page url> <screenshot.png> [--rematch]");
  process.exit(64);
}
const rematch = mode === "--rematch";
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

/** Waits until `pane`'s message list holds exactly `texts`, in order, all stored (none on its way or refused). */
async function messagesAre(what, pane, texts) {
  step = what;
  const selector = `[data-testid=pane-${pane}] [data-testid=messages] li`;
  await page.waitForFunction(
    ([s, want]) => {
      const items = [...document.querySelectorAll(s)];
      const stored = items.every((li) => !li.classList.contains("sending") && !li.classList.contains("failed"));
      return stored && JSON.stringify(items.map((li) => li.querySelector(".text")?.textContent)) === want;
    },
    [selector, JSON.stringify(texts)],
    { timeout: STEP_MS },
  );
}

/** Presses "Match" and returns the new matchId, once the page says it is published. */
async function pressMatch(what, before) {
  step = what;
  await page.getByTestId("match").click();
  step = `${what}: the match is published`;
  const status = page.getByTestId("match-status");
  await page.waitForFunction(
    ([s, old]) => {
      const text = document.querySelector(s)?.textContent ?? "";
      return text.startsWith("match published: ") && text !== `match published: ${old}`;
    },
    ["[data-testid=match-status]", before],
    { timeout: STEP_MS },
  );
  return (await status.textContent()).replace("match published: ", "");
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

  // Matches made before the page opened (the README's) are in the inbox: a notification of the
  // new match is told apart from theirs by its matchId.
  const first = await pressMatch("press Match");
  const notified = (pane) => pane.locator(`[data-match-id="${first}"]`).getByText("It's a match!");
  await see("alice gets the match notification", notified(alice));
  await see("bob gets the match notification", notified(bob));
  await see("alice can write", alice.locator("[data-testid=composer]:enabled"));
  await see("alice sees the match", alice.getByTestId("match-id").getByText(first, { exact: true }));
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

  if (rematch) {
    step = "alice presses Unmatch";
    await alice.getByTestId("unmatch").click();
    for (const [name, pane, other] of [["alice", alice, "bob"], ["bob", bob, "alice"]]) {
      const closed = `You and ${other} unmatched: that conversation is closed. Press “Match” for a new match.`;
      const hint = pane.getByTestId("hint").getByText(closed, { exact: true });
      await see(`${name} is told the conversation is closed`, hint);
      await messagesAre(`${name}'s pane no longer shows the conversation`, name, []);
      await see(`${name} can no longer write`, pane.locator("[data-testid=composer]:disabled"));
      await see(
        `${name}'s match notification says unmatched`,
        pane.locator(`[data-match-id="${first}"]`).getByText("(unmatched)"),
      );
      const unknown = pane.getByTestId("presence").getByText(`${other} unknown`, { exact: true });
      await see(`${name}'s pane no longer shows ${other}'s presence`, unknown);
    }
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-unmatched.png"), fullPage: true });

    const second = await pressMatch("press Match again", first);
    if (second === first) throw new Error(`the re-match reused matchId ${first}`);
    for (const [name, pane, other] of [["alice", alice, "bob"], ["bob", bob, "alice"]]) {
      await see(`${name} sees the new match`, pane.getByTestId("match-id").getByText(second, { exact: true }));
      await see(`${name} can write again`, pane.locator("[data-testid=composer]:enabled"));
      await messagesAre(`${name}'s new conversation is empty`, name, []);
      const online = pane.getByTestId("presence").getByText(`${other} online`, { exact: true });
      await see(`${name} sees ${other} online again`, online);
    }
    const again = "Matched again: still on for five?";
    step = "alice writes in the new conversation";
    await alice.getByTestId("composer").fill(again);
    await alice.getByTestId("composer").press("Enter");
    await messagesAre("bob gets alice's message in the new conversation", "bob", [again]);
    const yes = "Yes, same place.";
    step = "bob answers in the new conversation";
    await bob.getByTestId("composer").fill(yes);
    await bob.getByTestId("composer").press("Enter");
    await messagesAre("alice gets bob's answer in the new conversation", "alice", [again, yes]);
    await messagesAre("bob sees both messages in the new conversation", "bob", [again, yes]);
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-rematched.png"), fullPage: true });

    step = "the page shows no error";
    const shown = await page.getByTestId("error").allTextContents();
    if (shown.length > 0) throw new Error(`the page shows: ${shown.join(" | ")}`);
    const logged = console_.filter((line) => line.startsWith("[error]") || line.startsWith("[pageerror]"));
    if (logged.length > 0) throw new Error(`the page logged:\n${logged.join("\n")}`);
    console.log(`matches: ${first} ${second}`);
  }
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
