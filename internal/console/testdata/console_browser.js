// Drives the console in headless Chromium: reads its numbers twice, a few
// seconds apart, waits for a failed job in the recent failures table,
// filters the backend table, and takes a screenshot. Prints
// one JSON object for console_test.go.
// Usage: node console_browser.js URL CHROMIUM PROFILE_DIR SCREENSHOT TOKEN [HISTORY_POINTS]
const { chromium } = require("playwright-core");

const [url, executablePath, profile, screenshot, token, history] = process.argv.slice(2);

async function read(page) {
  return page.evaluate(() => {
    const text = (id) => document.getElementById(id).textContent.trim();
    const tenants = {};
    for (const tr of document.querySelectorAll("#tenants tbody tr")) {
      const td = tr.querySelectorAll("td");
      if (td.length >= 3) tenants[td[0].textContent] = td[2].textContent;
    }
    return {
      polls: window.sluiceConsole.polls,
      points: window.sluiceConsole.points,
      kpis: { rps: text("kpi-rps"), err: text("kpi-err"), p99: text("kpi-p99"), ttft: text("kpi-ttft"), tps: text("kpi-tps"), queue: text("kpi-queue"), up: text("kpi-up"), jobs: text("kpi-jobs") },
      backends: document.querySelectorAll("#backends tbody tr").length,
      tenants,
      jobs: document.getElementById("jobs").textContent,
      canvases: document.querySelectorAll(".chart canvas").length,
    };
  });
}

(async () => {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1440, height: 1100 },
  });
  const errors = [];
  try {
    const page = await context.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    // The 401s before the token is given are expected.
    page.on("console", (m) => { if (m.type() === "error" && !m.text().includes("401")) errors.push(m.text()); });
    await page.goto(url, { waitUntil: "load" });
    // The API answers 401 until the page is given the admin token.
    await page.waitForSelector("#auth:not([hidden])", { timeout: 30000 });
    await page.fill("#token", token);
    await page.click("#auth button");
    await page.waitForFunction(() => window.sluiceConsole && window.sluiceConsole.points >= 3, null, { timeout: 30000 });
    const first = await read(page);
    await page.waitForFunction((n) => window.sluiceConsole.points >= n, first.points + 3, { timeout: 30000 });
    // Let the 429s of team-a and an autoscaler decision show up.
    await page.waitForFunction(() => {
      const tr = [...document.querySelectorAll("#tenants tbody tr")].find((r) => r.firstChild.textContent === "team-a");
      return tr && parseFloat(tr.children[2].textContent) > 0 && window.sluiceConsole.decisions > 0;
    }, null, { timeout: 30000 }).catch(() => {});
    // A job of pool broken fails after its retries.
    await page.waitForSelector("#failures tbody tr[data-job]", { timeout: 30000 }).catch(() => {});
    const later = await read(page);
    const failures = await page.evaluate(() => [...document.querySelectorAll("#failures tbody tr[data-job]")]
      .map((tr) => [...tr.children].slice(1).map((td) => td.textContent)));
    // For the docs, some history makes a screenshot worth reading.
    if (history) await page.waitForFunction((n) => window.sluiceConsole.points >= n, Number(history), { timeout: 45000 }).catch(() => {});
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.fill("#filter", "tiny");
    const filtered = await page.evaluate(() => document.querySelectorAll("#backends tbody tr").length);
    const decisions = await page.evaluate(() => window.sluiceConsole.decisions);
    const cap = (o) => ({ Polls: o.polls, Points: o.points, KPIs: o.kpis, Backends: o.backends, Tenants: o.tenants, Jobs: o.jobs, Canvases: o.canvases });
    process.stdout.write(JSON.stringify({ First: cap(first), Later: cap(later), Failures: failures, Filtered: filtered, Decisions: decisions, Errors: errors, Screenshot: screenshot }));
  } finally {
    await context.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
