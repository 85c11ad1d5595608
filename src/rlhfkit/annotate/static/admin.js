// The dashboard's progress bar: its width comes from a data attribute, because the page's
// Content-Security-Policy allows no inline style.
"use strict";
for (const bar of document.querySelectorAll(".bar[data-fraction]")) {
  bar.style.width = `${Math.round(100 * Number(bar.dataset.fraction))}%`;
}
