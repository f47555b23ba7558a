/// Parameter groups as data: the composed group table, layer decay, freezing; exact model-state bytes.
module Research.Tests.ParameterGroupTests

open System
open Expecto
open TorchSharp
open Research.Abstractions
open Research.Core
open Research.Core.Memory
open Research.Core.Models
open Research.Core.Optim
open Research.Core.Precision
open Research.Core.Training
open Research.Tests.TestSupport

/// A module named like a vision-language model: vision_encoder.*, connector.*, language_model.*.
let private vlm () =
    let block (inputs: int64) (outputs: int64) =
        torch.nn.Sequential(struct ("proj", torch.nn.Linear(inputs, outputs) :> torch.nn.Module<torch.Tensor, torch.Tensor>),
                            struct ("norm", torch.nn.LayerNorm([| outputs |]) :> torch.nn.Module<torch.Tensor, torch.Tensor>))
    torch.nn.Sequential(
        struct ("vision_encoder", block 12L 8L :> torch.nn.Module<torch.Tensor, torch.Tensor>),
        struct ("connector", torch.nn.Linear(8L, 6L) :> torch.nn.Module<torch.Tensor, torch.Tensor>),
        struct ("language_model", block 6L 6L :> torch.nn.Module<torch.Tensor, torch.Tensor>))

let private named (m: torch.nn.Module) = m.named_parameters() |> Seq.map (fun struct (n, p) -> struct (n, p :> torch.Tensor)) |> Array.ofSeq

let tests =
    testList "parameter groups" [
        test "a VLM-named module gets the six documented groups: component × decay, lr 2e-6 / 2e-4 / 2e-5, λ on matrices only" {
            use m = vlm ()
            let plan = GroupPlan(0.01, GroupPlan.VisionLanguage)
            let struct (trainable, frozen) = ParameterGroups.Build(named m, plan)
            let rows =
                ParameterGroups.Summary(trainable)
                |> Seq.map (fun struct (g, tensors, count) -> g.Name, tensors, count, Math.Round(2e-5 * g.LrMultiplier, 12), g.WeightDecay)
                |> List.ofSeq
            Expect.equal rows [
                "vision_encoder.decay", 1, 96L, 2e-6, 0.01          // proj.weight 8×12
                "vision_encoder.no_decay", 3, 24L, 2e-6, 0.0        // proj.bias, norm.weight, norm.bias
                "connector.decay", 1, 48L, 2e-4, 0.01               // 6×8
                "connector.no_decay", 1, 6L, 2e-4, 0.0
                "language_model.decay", 1, 36L, 2e-5, 0.01
                "language_model.no_decay", 3, 18L, 2e-5, 0.0 ] "the six groups, in buffer order"
            Expect.isEmpty frozen "nothing frozen"
            let table = ParameterGroups.Table(trainable, frozen, 2e-5) |> List.ofSeq
            // docs/training-step.md documents this table: it must be exactly what the code prints.
            let page = IO.File.ReadAllText(IO.Path.Combine(repoRoot, "docs", "training-step.md"))
            let documented =
                let fence = page.IndexOf("```\ngroup ")
                Expect.isGreaterThanOrEqual fence 0 "docs/training-step.md shows the group table"
                let start = fence + 4
                page.Substring(start, page.IndexOf("```", start) - start).TrimEnd('\n').Split('\n') |> List.ofArray
            Expect.equal table documented "docs/training-step.md's table, line by line"
        }
        test "a frozen component gets requires_grad = false, stays out of the optimizer, and the table reports the trainable share" {
            use m = vlm ()
            let components = [| ComponentRule("vision_encoder", @"^vision_encoder\.", 1.0, true); ComponentRule("rest", ".", 1.0) |]
            let struct (trainable, frozen) = ParameterGroups.Build(named m, GroupPlan(0.01, components))
            Expect.equal (frozen |> Seq.map (fun struct (n, _) -> n) |> List.ofSeq)
                [ "vision_encoder.proj.weight"; "vision_encoder.proj.bias"; "vision_encoder.norm.weight"; "vision_encoder.norm.bias" ] "frozen"
            for struct (_, p) in frozen do Expect.isFalse p.requires_grad "requires_grad off"
            use o = Optimizer.AdamW(trainable)
            Expect.equal o.Buffer.Count 108L "the optimizer holds only the 108 trainable parameters"
            let table = ParameterGroups.Table(trainable, frozen, 1e-3) |> List.ofSeq
            Expect.equal (List.last table) "parameters 228, trainable 108 (47.4%)" "share"
        }
        test "layer-wise lr decay: a parameter at depth d of D gets factor^(D − d); embeddings deepest-decayed, head undecayed" {
            use m = Gpt.Create(GptShape(Vocab = 16L, MaxLen = 8L, Width = 8L, Heads = 2L, Layers = 3L), new torch.Generator(1UL), classes = 2L)
            let struct (trainable, _) = ParameterGroups.Build(named m, GroupPlan(0.0, LayerDecay = LayerDecay(0.5, @"^h\.(\d+)\.")))
            let multiplier name = (trainable |> Seq.find (fun p -> p.Name = name)).Group.LrMultiplier
            // D = 3 layers + 1 = 4: embeddings d = 0, h.i d = i + 1, final norm and head d = 4.
            Expect.equal (multiplier "wte.weight") (0.5 ** 4.0) "embeddings"
            Expect.equal (multiplier "h.0.attn.c_attn.weight") (0.5 ** 3.0) "first block"
            Expect.equal (multiplier "h.2.mlp.c_fc.weight") 0.5 "last block"
            Expect.equal (multiplier "head.weight") 1.0 "head"
        }
        test "a component pattern that matches nothing is an error naming it (a typo must not silently train at the base rate)" {
            use m = vlm ()
            try
                ParameterGroups.Build(named m, GroupPlan(0.01, [| ComponentRule("vision", @"^visual\.") |])) |> ignore
                failtest "accepted"
            with :? InvalidOperationException as e -> Expect.stringContains e.Message "component 'vision': pattern '^visual\\.' matches no parameter" "named"
        }
        testList "exact model-state bytes" [
            for mode, optimizer, momentum in [ PrecisionMode.Fp32, "adamw", 0.0; PrecisionMode.Bf16, "adamw", 0.0
                                               PrecisionMode.Fp16, "adamw", 0.0; PrecisionMode.Bf16, "sgd", 0.9; PrecisionMode.Fp32, "sgd", 0.0 ] ->
                test (sprintf "%A %s: the bytes predicted from parameter counts equal the bytes of the tensors after a real step" mode optimizer) {
                    use _ = torch.NewDisposeScope()
                    use m = new Mlp(8L, [| 16 |], 3L)
                    let policy = PrecisionPolicy(mode)
                    policy.Prepare(m)
                    // A frozen first layer, so frozen weights are counted too.
                    let struct (trainable, frozen) =
                        ParameterGroups.Build(named m, GroupPlan(0.01, [| ComponentRule("body", @"^layers\.", 1.0, true); ComponentRule("head", ".") |]))
                    use o = if optimizer = "sgd" then Optimizer.Sgd(trainable, momentum) else Optimizer.AdamW(trainable)
                    use gen = new torch.Generator(1UL)
                    let x, y = torch.randn([| 16L; 8L |], generator = gen), torch.randint(0L, 3L, [| 16L |], generator = gen)
                    let outcome = TrainStep(m, o, policy, MethodSet.None, 0.0).Run([| Batch(x, y) |], 1e-3)
                    Expect.isTrue outcome.Applied "a real step was taken"
                    let frozenCount = frozen |> Seq.sumBy (fun struct (_, p) -> p.numel())
                    let predicted = ModelMemory.Predict(o.Buffer.Count, frozenCount, mode, optimizer, momentum)
                    Expect.equal (ModelMemory.Measure(m, o)) predicted "byte for byte"
                }
        ]
        test "research memory --config prints predicted = allocated for the demo model in bf16" {
            let r = research repoRoot [ "memory"; "--config"; "experiments/configs/demo-pretrain.toml"; "--set"; "precision.mode=bf16" ]
            Expect.equal r.ExitCode 0 r.Err
            let row = r.Out.Split('\n') |> Array.find (fun l -> l.StartsWith "fp32 master weights")
            let cells = row.Split(' ', StringSplitOptions.RemoveEmptyEntries)
            Expect.equal cells[3..4] [| "1,077,288"; "1,077,288" |] "269,322 parameters × 4 B, predicted and allocated"
            Expect.stringContains r.Out "allocated = predicted, byte for byte" "exact"
        }
    ]
