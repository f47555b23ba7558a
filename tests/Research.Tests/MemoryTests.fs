/// The memory estimator: each test states an identity of full fine-tuning's byte count, ZeRO's 16 B/param for
/// Adam(W) (Rajbhandari et al. 2020) and Korthikanti et al.'s (2022) activations per layer, against figures worked
/// out by hand in the test's name or comment. Properties draw an integer seed over the whole int range (DoNotSize)
/// and take everything else from a Random with that seed, so no generator is registered and every failure replays.
module Research.Tests.MemoryTests

open System
open Expecto
open FsCheck
open Research.Core.Memory
open Research.Abstractions
open Research.Tests.TestSupport

let private GB = 1e9

/// The hand-worked figures below are integers far under 2⁵³ and the estimator multiplies them by small integers,
/// so those compare exactly. Random P are arbitrary doubles: a sum of five products rounds a few times, each
/// 1.1e-16 relative; 1e-12 leaves room for that and still catches any missing or doubled byte per parameter.
let private tolerance = 1e-12

let private relativelyClose (what: string) (actual: float) (expected: float) =
    let error = abs (actual - expected) / max (abs expected) 1.0
    if not (error <= tolerance) then failtestf "%s: %.17g vs %.17g, relative error %.3g above %.0e" what actual expected error tolerance

let private pick (rng: Random) (xs: 'a list) = xs[rng.Next xs.Length]

let private logUniform (rng: Random) (lo: float) (hi: float) = exp (log lo + rng.NextDouble() * (log hi - log lo))

let private precisions = Precision.ByName.Values |> Seq.distinct |> List.ofSeq
let private optimizers = OptimizerState.ByName.Values |> Seq.distinct |> List.ofSeq

/// A decoder shape of plausible size: h a multiple of a, up to 65536 tokens.
let private randomShape (rng: Random) =
    let heads = int64 (rng.Next(1, 129))
    TransformerShape(int64 (rng.Next(1, 201)), heads * int64 (rng.Next(1, 257)), heads, int64 (rng.Next(1, 65537)), int64 (rng.Next(1, 65)))

/// Any precision and optimizer, P log-uniform from 1 to 1e13, with a random shape (or none) and recomputation or not.
let private randomEstimate (rng: Random) (parameters: float) =
    let shape = if rng.Next 2 = 0 then null else randomShape rng
    MemoryEstimate(parameters, pick rng precisions, pick rng optimizers, shape, rng.Next 2 = 0)

let private modelState (e: MemoryEstimate) = [ e.Weights; e.Gradients; e.MasterCopy; e.OptimizerMoments ]

let private zeroTests =
    [ test "mixed-fp16 AdamW model state is 16 B/param: 7e9 parameters → 112 GB, of which the fp32 master copy is 28 GB" {
          let e = MemoryEstimate(7e9, Precision.MixedFp16, OptimizerState.Adam)
          Expect.equal e.ModelStateBytesPerParameter 16 "2 (fp16 weights) + 2 (fp16 grads) + 4 (fp32 master) + 8 (m, v)"
          Expect.equal (e.Weights / GB) 14.0 "fp16 weights"
          Expect.equal (e.Gradients / GB) 14.0 "fp16 gradients"
          Expect.equal (e.MasterCopy / GB) 28.0 "fp32 master copy"
          Expect.equal (e.OptimizerMoments / GB) 56.0 "fp32 m and v"
          Expect.equal (e.Total / GB) 112.0 "model state, no activations without a shape"
          Expect.equal (MemoryEstimate(7e9, Precision.ByName["bf16"], OptimizerState.ByName["adam"]).Total) e.Total
              "bf16 mixed precision and Adam hold the same bytes"
      }
      test "the seed's mixed-precision row omits exactly the fp32 master copy: its 14 + 14 + 56 GB model state + 28 GB = 112 GB" {
          let e = MemoryEstimate(SeedChapter.Parameters, Precision.MixedFp16, OptimizerState.Adam)
          let seed = SeedChapter.MixedPrecision
          Expect.equal [ for c in seed.OmittedFrom e -> c.Kind ] [ Component.MasterCopy ] "what the seed left out"
          let seedModelState = seed.Total - seed.Figures[Component.Activations]
          Expect.equal (seedModelState + e.MasterCopy / GB) (e.ModelState / GB) "84 + 28 = 112"
      }
      test "fp32 AdamW is 16 B/param too: weights 28 + gradients 28 + moments 56 GB (the seed's 84 GB omits the gradients)" {
          let e = MemoryEstimate(7e9, Precision.Fp32, OptimizerState.Adam)
          Expect.equal e.ModelStateBytesPerParameter 16 "4 (weights) + 4 (grads) + 0 (no master) + 8 (m, v)"
          Expect.equal [ e.Weights / GB; e.Gradients / GB; e.MasterCopy / GB; e.OptimizerMoments / GB ] [ 28.0; 28.0; 0.0; 56.0 ] "components"
          Expect.equal (e.Total / GB) 112.0 "total"
          Expect.equal [ for c in SeedChapter.Fp32.OmittedFrom e -> c.Kind ] [ Component.Gradients ] "what the seed left out"
          Expect.equal (SeedChapter.Fp32.Total + e.Gradients / GB) (e.Total / GB) "84 + 28 = 112"
      }
      test "pure-bf16 AdamW is 2 + 2 + 8 = 12 B/param: 84 GB at 7e9, the seed's model state, since it keeps no master copy" {
          let e = MemoryEstimate(7e9, Precision.PureBf16, OptimizerState.Adam)
          Expect.equal e.ModelStateBytesPerParameter 12 "bytes per parameter"
          Expect.equal (e.Total / GB) 84.0 "total"
      }
      test "optimizer state is 8 B/param for Adam(W), 4 for SGD with momentum, 0 for SGD" {
          Expect.equal [ for n in [ "adamw"; "adam"; "sgd-momentum"; "sgd" ] -> OptimizerState.ByName[n].BytesPerParameter ] [ 8; 8; 4; 0 ] "bytes"
      } ]

let private activationTests =
    [ test "the activation formula reproduces the paper's worked figure: for GPT-3 175B (a=96, s=2048, h=12288) 5as/h = 80, so attention terms dominate 34" {
          let gpt3 = TransformerShape(96L, 12288L, 96L, 2048L, 1L)
          Expect.equal gpt3.AttentionTerm 80.0 "5·96·2048/12288"
          Expect.isGreaterThan gpt3.AttentionTerm 34.0 "attention outweighs the linear terms"
          // s·b·h·(34 + 80) = 2048 · 12288 · 114
          Expect.equal (gpt3.ActivationBytesPerLayer false) 2_868_903_936.0 "bytes per layer"
      }
      test "by hand: L=2, h=8, a=2, s=4, b=3 keeps s·b·h·(34 + 5·a·s/h) = 96·(34 + 5) = 3744 B per layer, 7488 B in all" {
          let shape = TransformerShape(2L, 8L, 2L, 4L, 3L)
          Expect.equal (shape.ActivationBytesPerLayer false) 3744.0 "per layer"
          Expect.equal (shape.ActivationBytes false) 7488.0 "two layers"
          let e = MemoryEstimate(1000.0, Precision.MixedBf16, OptimizerState.Adam, shape)
          Expect.equal e.Activations 7488.0 "the estimate counts the shape's activations"
          Expect.equal e.Total (16000.0 + 7488.0) "model state 16·1000 + activations"
      }
      test "by hand: a 7B shape (L=32, h=4096, a=32, s=2048, b=1) keeps 2048·4096·(34 + 80) = 956,301,312 B per layer, 30.6 GB in all" {
          let shape = TransformerShape(32L, 4096L, 32L, 2048L, 1L)
          Expect.equal (shape.ActivationBytesPerLayer false) 956_301_312.0 "per layer"
          Expect.equal (shape.ActivationBytes false) 30_601_641_984.0 "32 layers"
      }
      test "full recomputation keeps 2sbh per layer" {
          let shape = TransformerShape(2L, 8L, 2L, 4L, 3L)
          Expect.equal (shape.ActivationBytesPerLayer true) 192.0 "2·4·3·8"
          Expect.equal (shape.ActivationBytes true) 384.0 "two layers"
      }
      testPropertyWithConfig propConfig "full recomputation keeps L·2·s·b·h and never more than without it" <| fun (DoNotSize seed) ->
          let s = randomShape (Random seed)
          Expect.equal (s.ActivationBytes true) (float (s.Layers * 2L * s.Sequence * s.Batch * s.Hidden)) "L·2sbh"
          Expect.isLessThan (s.ActivationBytes true) (s.ActivationBytes false) "recomputation saves memory" ]

let private propertyTests =
    [ testPropertyWithConfig propConfig "total = sum of components" <| fun (DoNotSize seed) ->
          let rng = Random seed
          let e = randomEstimate rng (logUniform rng 1.0 1e13)
          let sum = e.Components |> Seq.sumBy (fun c -> c.Bytes)
          relativelyClose "Σ components" sum e.Total
          relativelyClose "Σ model-state components" (List.sum (modelState e)) e.ModelState
          Expect.equal (e.Components |> Seq.exists (fun c -> c.Kind = Component.Activations)) (not (isNull e.Shape))
              "activations are a component exactly when the shape is given"

      testPropertyWithConfig propConfig "bytes scale linearly in P: each model-state component of αP₁ + βP₂ is α·(P₁'s) + β·(P₂'s)"
      <| fun (DoNotSize seed) ->
          let rng = Random seed
          let p1, p2 = logUniform rng 1.0 1e12, logUniform rng 1.0 1e12
          let alpha, beta = rng.NextDouble() * 10.0, 0.01 + rng.NextDouble() * 10.0
          let at p = MemoryEstimate(p, pick rng precisions, pick rng optimizers)
          let e1 = at p1
          let like (e: MemoryEstimate) p = MemoryEstimate(p, e.Precision, e.Optimizer)
          let e2, mixed = like e1 p2, like e1 (alpha * p1 + beta * p2)
          List.iteri2 (fun i (m: float) (a: float, b: float) -> relativelyClose (sprintf "component %d" i) m (alpha * a + beta * b))
              (modelState mixed) (List.zip (modelState e1) (modelState e2))
          relativelyClose "bytes per parameter" (mixed.Total / mixed.Parameters) (float mixed.ModelStateBytesPerParameter) ]

let private cliTests =
    [ test "research memory --params 7e9 --precision mixed-fp16 --optimizer adamw prints 112 GB and names the fp32 master copy as what the seed omits" {
          let r = research (tempDir "memory") [ "memory"; "--params"; "7e9"; "--precision"; "mixed-fp16"; "--optimizer"; "adamw" ]
          Expect.equal r.ExitCode 0 (sprintf "exit code; stderr: %s" r.Err)
          let lines = r.Out.Split('\n') |> Array.map (fun l -> l.TrimEnd())
          let row name = lines |> Array.tryFind (fun l -> l.StartsWith(name + " ", StringComparison.Ordinal))
          match row "model state" with
          | Some l -> Expect.stringContains l "112.00" "model state in GB"
          | None -> failtestf "no 'model state' row in:\n%s" r.Out
          match row "fp32 master copy" with
          | Some l -> Expect.stringContains l "28.00" "master copy in GB"
          | None -> failtestf "no 'fp32 master copy' row in:\n%s" r.Out
          Expect.stringContains r.Out "leaves out the 28 GB fp32 master copy" "what the seed left out"
      }
      test "research memory rejects an unknown precision with exit code 2, listing the valid names" {
          let r = research (tempDir "memory") [ "memory"; "--params"; "7e9"; "--precision"; "fp8" ]
          Expect.equal r.ExitCode 2 "exit code"
          Expect.stringContains r.Err "unknown --precision 'fp8' (valid: fp32, bf16, mixed-bf16, fp16, mixed-fp16, pure-bf16)" "message"
          Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
      }
      test "research memory with part of the shape exits 2 naming the missing options" {
          let r = research (tempDir "memory") [ "memory"; "--params"; "7e9"; "--layers"; "32"; "--hidden"; "4096" ]
          Expect.equal r.ExitCode 2 "exit code"
          Expect.stringContains r.Err "missing --heads, --seq, --batch" "message"
      } ]

let tests = testList "memory" (zeroTests @ activationTests @ propertyTests @ cliTests)
