/**
 * A small hand-written SVG line chart (log or linear axes, a legend), so that benchmark reports
 * can show curves without a charting dependency. Deterministic output: the same data gives the
 * same file, so a regenerated report only differs where the figures do.
 */

/** One point; `open` ones (e.g. a measurement that hit its cap) are drawn hollow, off the line. */
export interface Point {
  x: number;
  y: number;
  open?: boolean;
}

/** One line of the chart. */
export interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  points: Point[];
}

/** What to draw. */
export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  logX?: boolean;
  logY?: boolean;
  /** Formats a tick value. */
  formatX?: (v: number) => string;
  formatY?: (v: number) => string;
  width?: number;
  height?: number;
  /** Room right of the plot for the legend, px. Default 200. */
  legendWidth?: number;
  /** A line under the legend explaining the hollow points; drawn only when there are some. */
  openNote?: string;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Tick values: powers of ten (and 2×, 5×) on a log axis, round steps on a linear one. */
function ticks(lo: number, hi: number, log: boolean): number[] {
  const out: number[] = [];
  if (log) {
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const v = m * 10 ** e;
        if (v >= lo * 0.999 && v <= hi * 1.001) out.push(v);
      }
    }
    return out;
  }
  const step = 10 ** Math.floor(Math.log10((hi - lo) / 4 || 1));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= 6) ?? step * 10;
  for (let v = Math.ceil(lo / nice) * nice; v <= hi + 1e-9; v += nice) out.push(Number(v.toPrecision(12)));
  return out;
}

function extent(values: number[], log: boolean): [number, number] {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (log) {
    lo = 10 ** Math.floor(Math.log10(lo));
    hi = 10 ** Math.ceil(Math.log10(hi));
    if (hi <= lo) hi = lo * 10;
  } else {
    lo = Math.min(0, lo);
    hi = hi === lo ? lo + 1 : hi * 1.05;
  }
  return [lo, hi];
}

/** Renders the chart as a standalone SVG document. */
export function lineChart(o: LineChartOptions): string {
  const W = o.width ?? 720;
  const H = o.height ?? 420;
  const m = { left: 70, right: o.legendWidth ?? 200, top: 40, bottom: 50 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = o.series.flatMap((s) => s.points).filter((p) => p.x > 0 && p.y > 0);
  const fx = o.formatX ?? ((v: number) => String(v));
  const fy = o.formatY ?? ((v: number) => String(v));
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.left + pw / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(o.title)}</text>`,
  ];
  if (all.length === 0) {
    parts.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`, '</svg>');
    return `${parts.join('\n')}\n`;
  }
  const [x0, x1] = extent(
    all.map((p) => p.x),
    !!o.logX,
  );
  const [y0, y1] = extent(
    all.map((p) => p.y),
    !!o.logY,
  );
  const sx = (v: number): number =>
    m.left +
    (o.logX ? (Math.log10(v) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0)) : (v - x0) / (x1 - x0)) *
      pw;
  const sy = (v: number): number =>
    m.top +
    ph -
    (o.logY ? (Math.log10(v) - Math.log10(y0)) / (Math.log10(y1) - Math.log10(y0)) : (v - y0) / (y1 - y0)) *
      ph;
  const r = (v: number): string => v.toFixed(1);

  for (const t of ticks(y0, y1, !!o.logY)) {
    parts.push(
      `<line x1="${m.left}" x2="${m.left + pw}" y1="${r(sy(t))}" y2="${r(sy(t))}" stroke="#e3e3e3"/>`,
      `<text x="${m.left - 6}" y="${r(sy(t) + 4)}" text-anchor="end">${esc(fy(t))}</text>`,
    );
  }
  for (const t of ticks(x0, x1, !!o.logX)) {
    parts.push(
      `<line x1="${r(sx(t))}" x2="${r(sx(t))}" y1="${m.top}" y2="${m.top + ph}" stroke="#e3e3e3"/>`,
      `<text x="${r(sx(t))}" y="${m.top + ph + 16}" text-anchor="middle">${esc(fx(t))}</text>`,
    );
  }
  parts.push(
    `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`,
    `<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(16 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  o.series.forEach((s, i) => {
    const all = s.points.filter((p) => p.x > 0 && p.y > 0).sort((a, b) => a.x - b.x);
    const pts = all.filter((p) => !p.open);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1) {
      const d = pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${r(sx(p.x))} ${r(sy(p.y))}`).join(' ');
      parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"${dash}/>`);
    }
    for (const p of all) {
      parts.push(
        p.open
          ? `<circle cx="${r(sx(p.x))}" cy="${r(sy(p.y))}" r="4.5" fill="white" stroke="${s.color}" stroke-width="2"/>`
          : `<circle cx="${r(sx(p.x))}" cy="${r(sy(p.y))}" r="3.5" fill="${s.color}"/>`,
      );
    }
    const ly = m.top + 10 + i * 20;
    const lx = m.left + pw + 16;
    parts.push(
      `<line x1="${lx}" x2="${lx + 28}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 34}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  if (o.openNote && o.series.some((s) => s.points.some((p) => p.open))) {
    const ly = m.top + 10 + o.series.length * 20;
    const lx = m.left + pw + 16;
    parts.push(
      `<circle cx="${lx + 14}" cy="${ly}" r="4.5" fill="white" stroke="#444" stroke-width="2"/>`,
      `<text x="${lx + 34}" y="${ly + 4}">${esc(o.openNote)}</text>`,
    );
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
