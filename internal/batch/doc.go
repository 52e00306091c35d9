// Package batch serves the OpenAI Files and Batch APIs (/v1/files,
// /v1/batches) on sluice's durable jobs.
//
// A batch input file is JSONL, one request per line. It is validated line by
// line when uploaded and again, with the gateway's own checks (route, model,
// the tenant's permissions), when a batch is created from it. Each line then
// runs as one low-priority job through the jobs.Service, so it gets the same
// dispatch, balancing, retries and tenant limits as any job. Results are
// collected into segments in durable storage as lines finish; when every
// line is done the segments become the batch's output and error files.
//
// Guarantees (docs/jobs.md, "The Batch API", explains why they hold):
//
//   - Every line of a finished batch appears exactly once, in the output
//     file or the error file: a line's result is committed by a
//     compare-and-set that marks the line done in the batch record, and only
//     lines marked by that commit are in the segment it commits.
//   - A line becomes at most one job: its job is submitted with the
//     idempotency key "batch:<batch id>:<sha256 of custom_id>", so a runner
//     that restarts (after kill -9) finds the job it submitted before
//     instead of making a second one. The job itself runs at least once, as
//     every job does.
//   - A batch survives the gateway: its record, plan and segments are in
//     the job store's engine, and any gateway sharing the store takes over a
//     batch whose runner stopped renewing its lease.
package batch
