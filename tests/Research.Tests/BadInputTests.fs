/// Bad input never crashes: each mistake a user (or a buggy plugin) can make ends with one line naming what was wrong,
/// exit 1 (the run failed) or 2 (a user mistake), never .NET's unhandled-exception abort (134) or a stack trace.
module Research.Tests.BadInputTests

open System.IO
open Expecto
open Research.Tests.TestSupport

/// One error line on stderr, no trace, not the runtime's unhandled-exception report.
let private expectOneLine (r: ProcessResult) (code: int) (names: string) =
    Expect.equal r.ExitCode code (sprintf "exit %d; stderr: %s" code r.Err)
    Expect.stringContains r.Err names "names what was wrong"
    Expect.isFalse (r.Err.Contains "Unhandled exception") "not an unhandled exception"
    Expect.isFalse (r.Err.Contains "   at ") "no stack trace"

let tests =
    testList "bad input" [
        test "research eval of a path that does not exist exits 2 naming the path" {
            let dir = tempDir "bad-eval"
            expectOneLine (research dir [ "eval"; "/nonexistent" ]) 2 "no checkpoint at /nonexistent"
        }
        test "command-line numbers out of range exit 2 naming the option: plot schedule --steps 10¹¹, bench fisher --samples −1, --lr nan" {
            let dir = tempDir "bad-args"
            expectOneLine (research dir [ "plot"; "schedule"; "cosine"; "--steps"; "100000000000"; "--csv" ]) 2 "--steps must be between 1 and 10000000"
            expectOneLine (research dir [ "bench"; "fisher"; "--samples"; "-1" ]) 2 "--samples must be between 1 and 1000000"
            expectOneLine (research dir [ "plot"; "schedule"; "cosine"; "--lr"; "nan"; "--csv" ]) 2 "--lr must be a finite number"
        }
        test "a diverged fp32 run fails with one line (exit 1) and is recorded as failed" {
            let dir = tempDir "bad-diverged"
            let path = syntheticConfig dir "[optimizer]\nname = \"sgd\"\nlr = 1e30\n"
            expectOneLine (research dir [ "train"; path ]) 1 "run failed: the loss or gradient is not finite"
            let status = Research.Tests.TrainingTests.storeRows (onlyRunDir dir) "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "failed") "recorded as failed"
        }
        test "an fp16 run whose every step the loss scaler skips fails (exit 1), not finished" {
            let dir = tempDir "bad-skipped"
            let path = syntheticConfig dir "[precision]\nmode = \"fp16\"\ninitial_scale = 1e38\n"
            expectOneLine (research dir [ "train"; path ]) 1 "skipped every step"
            let status = Research.Tests.TrainingTests.storeRows (onlyRunDir dir) "SELECT status FROM runs" |> List.exactlyOne
            Expect.equal status[0] (box "failed") "recorded as failed"
        }
        test "an error no handler foresaw (a store that is not SQLite) prints one line and exits 1; --verbose adds the trace" {
            let dir = tempDir "bad-store"
            let run = Path.Combine(dir, "runs", "r")
            Directory.CreateDirectory run |> ignore
            File.WriteAllText(Path.Combine(run, "run.sqlite"), "this is not a database")
            let r = research dir [ "runs"; "show"; run ]
            Expect.contains [ 1; 2 ] r.ExitCode (sprintf "exit 1 or 2, not 134: %s" r.Err)
            Expect.isFalse (r.Err.Contains "Unhandled exception") "not an unhandled exception"
            Expect.isFalse (r.Err.Contains "   at ") "no trace"
            let verbose = research dir [ "runs"; "show"; run; "--verbose" ]
            Expect.stringContains verbose.Err "   at " "--verbose prints the trace"
        }
    ]
