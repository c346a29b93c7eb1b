// The Node/Express reference of `make bench`: what the official CDS Hooks example services
// (cds-hooks/sandbox-cds-services) do per call, with the body limit raised so 1 MB requests are
// read: parse the JSON body with express.json(), read the patient from prefetch, answer one card.
// No rules. Workers: BENCH_WORKERS processes (node:cluster), as many as the service's gunicorn
// workers, so throughput is compared worker for worker.
//
//   BENCH_WORKERS=4 node bench/node/server.js --host 127.0.0.1 --port 9003
"use strict";
const cluster = require("node:cluster");
const express = require("express");

function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

function patientName(patient) {
  const name = (patient && patient.name && patient.name[0]) || {};
  return [...(name.given || []), name.family].filter(Boolean).join(" ") || "unknown patient";
}

function app() {
  const server = express();
  server.use(express.json({ limit: "16mb" })); // the stock limit (100 kB) refuses charts of 300 KB
  server.get("/healthz", (req, res) => res.json({ status: "ok" }));
  server.post("/cds-services/:id", (req, res) => {
    const prefetch = (req.body && req.body.prefetch) || {};
    res.json({
      cards: [{
        uuid: "2b3a7a2e-4f4e-4c59-9d2b-6c7f0f6b0c11",
        summary: `Now seeing: ${patientName(prefetch.patient)}`,
        indicator: "info",
        source: { label: "Node/Express bench reference" },
      }],
    });
  });
  return server;
}

const workers = Number(process.env.BENCH_WORKERS || 1);
if (cluster.isPrimary && workers > 1) {
  for (let i = 0; i < workers; i += 1) cluster.fork();
  process.on("SIGTERM", () => {
    for (const worker of Object.values(cluster.workers)) worker.kill("SIGTERM");
    process.exit(0);
  });
} else {
  app().listen(Number(option("port", "9003")), option("host", "127.0.0.1"));
}
