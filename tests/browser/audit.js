// The browser tier's accessibility audit (tests/browser/browser_harness.py, accessibility_problems), evaluated in
// the page: tables have a caption and scoped header cells, form controls a label, buttons and links a name, images
// an accessible name, and every piece of visible text a contrast of at least 4.5:1 (WCAG AA) with the background
// it is drawn on (the first opaque background up its ancestors; disabled controls and SVG text are left out, as
// WCAG leaves out inactive controls). Returns one line per problem.
() => {
  const problems = [];
  const where = (el) => el.outerHTML.slice(0, 120);
  for (const table of document.querySelectorAll("table")) {
    if (!table.querySelector(":scope > caption")?.textContent.trim()) problems.push(`table without caption: ${where(table)}`);
    for (const th of table.querySelectorAll("th")) {
      if (!["col", "row", "colgroup", "rowgroup"].includes(th.getAttribute("scope"))) problems.push(`th without scope: ${where(th)}`);
    }
  }
  for (const control of document.querySelectorAll("input, select, textarea")) {
    if (!control.labels?.length && !control.getAttribute("aria-label")) problems.push(`control without label: ${where(control)}`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (!(el.getAttribute("aria-label") || el.textContent).trim()) problems.push(`control without a name: ${where(el)}`);
  }
  for (const img of document.querySelectorAll("img, svg[role=img]")) {
    const name = img.getAttribute("alt") ?? img.getAttribute("aria-label") ?? img.getAttribute("aria-labelledby");
    if (!name) problems.push(`image without a name: ${where(img)}`);
  }
  const rgba = (text) => {
    const m = text.match(/rgba?\(([^)]+)\)/);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const luminance = ({ r, g, b }) => {
    const lin = [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg && bg.a > 0.99) return bg;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    if (el.closest("svg, [disabled], .sr-only, noscript, script, style, option")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || style.display === "none" || !el.getClientRects().length) continue;
    const fg = rgba(style.color), bg = background(el);
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5) problems.push(`contrast ${ratio.toFixed(2)}:1 for "${text.textContent.trim().slice(0, 30)}" (${style.color} on rgb(${bg.r}, ${bg.g}, ${bg.b}))`);
  }
  return problems;
}
