-- wrk script for the overhead scenario: every request is the same small,
-- non-streamed chat completion, the body sluice routes by its "model".
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"sim-llm","messages":[{"role":"user","content":"the quick brown fox jumps over the lazy dog and then runs far away"}],"max_tokens":16}'
