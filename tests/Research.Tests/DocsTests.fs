/// The README is the front door and docs/ holds one page per topic: every relative link and image of those pages must
/// name a file or folder of the repository, every #anchor a heading of its page as GitHub spells it, and every page
/// must be reachable from the README.
module Research.Tests.DocsTests

open System
open System.Globalization
open System.IO
open System.Text
open System.Text.RegularExpressions
open Expecto
open Research.Tests.TestSupport

let readmePath = Path.Combine(repoRoot, "README.md")

/// README.md and every Markdown page under docs/.
let pages () =
    readmePath :: (Directory.GetFiles(Path.Combine(repoRoot, "docs"), "*.md", SearchOption.AllDirectories) |> Array.sort |> List.ofArray)

let relative (path: string) = Path.GetRelativePath(repoRoot, path).Replace('\\', '/')

/// The lines outside fenced code blocks: a '#' or a bracket inside a code block is code, not a heading or a link.
let prose (text: string) =
    let mutable fence = None
    [ for line in text.Replace("\r\n", "\n").Split('\n') do
        let t = line.TrimStart()
        let marker = if t.StartsWith "```" then Some "```" elif t.StartsWith "~~~" then Some "~~~" else None
        match fence, marker with
        | None, Some m -> fence <- Some m
        | Some f, Some m when m = f -> fence <- None
        | None, None -> yield line
        | _ -> () ]

/// GitHub's anchor of a heading: its rendered text (a link's text, code without its backquotes, no emphasis marks),
/// lower-cased, every character removed that is not a letter, a digit, a combining mark, '-', '_' or a space, and each
/// space turned into '-'.
let slug (heading: string) =
    let text = Regex.Replace(heading, @"!?\[([^\]]*)\]\([^)]*\)", "$1").Replace("`", "").Replace("*", "")
    let kept = StringBuilder()
    for c in text.Trim().ToLowerInvariant() do
        match Char.GetUnicodeCategory c with
        | _ when c = ' ' -> kept.Append '-' |> ignore
        | _ when c = '-' || c = '_' -> kept.Append c |> ignore
        | UnicodeCategory.NonSpacingMark | UnicodeCategory.SpacingCombiningMark -> kept.Append c |> ignore
        | _ when Char.IsLetterOrDigit c -> kept.Append c |> ignore
        | _ -> ()
    kept.ToString()

/// The anchors of a page's headings, in order; a repeated slug gets -1, -2, … as GitHub numbers them.
let anchors (text: string) =
    let seen = Collections.Generic.Dictionary<string, int>()
    [ for line in prose text do
        let m = Regex.Match(line, @"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
        if m.Success then
            let s = slug m.Groups[1].Value
            match seen.TryGetValue s with
            | true, n ->
                seen[s] <- n + 1
                yield sprintf "%s-%d" s n
            | _ ->
                seen[s] <- 1
                yield s ]

/// Every link and image target of a page's prose: inline code is blanked first (`[[methods]]` is not a link), and a
/// link's text may run over a line break.
let links (text: string) =
    let body = prose text |> List.map (fun l -> Regex.Replace(l, "`[^`]*`", "code")) |> String.concat "\n"
    [ for m in Regex.Matches(body, @"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(<?([^)\s>]+)>?(?:\s+""[^""]*"")?\)") -> m.Groups[1].Value ]

let isExternal (target: string) = Regex.IsMatch(target, @"^[A-Za-z][A-Za-z0-9+.-]*:")

/// Where a relative target points: the file or folder (absolute) and the anchor after '#', if any.
let resolve (page: string) (target: string) =
    let hash = target.IndexOf '#'
    let path, anchor = if hash < 0 then target, None else target[.. hash - 1], Some target[hash + 1 ..]
    let file = if path = "" then page else Path.GetFullPath(Path.Combine(Path.GetDirectoryName page, Uri.UnescapeDataString path))
    file, anchor

let tests =
    testList "docs" [
        test "GitHub's slug: lower-cased, punctuation removed, each space a '-', repeated headings numbered" {
            Expect.equal (slug "The demo: forgetting on day one") "the-demo-forgetting-on-day-one" "colon removed"
            Expect.equal (slug "Checked before a run; `--dry-run`") "checked-before-a-run---dry-run" "code keeps its text, spaces stay one '-' each"
            Expect.equal (slug "How a run works: config → builder → loop → run folder") "how-a-run-works-config--builder--loop--run-folder" "arrows removed"
            Expect.equal (slug "Pre-trained vision: ImageNet ResNet-18 on Fashion-MNIST 0–4") "pre-trained-vision-imagenet-resnet-18-on-fashion-mnist-04" "en dash removed"
            Expect.equal (slug "The λ sweep") "the-λ-sweep" "letters of any script stay"
            Expect.equal (slug "See [the store](runs.md) and `run_id`") "see-the-store-and-run_id" "a link's text; '_' stays"
            Expect.equal (anchors "# A\n```\n# not a heading\n```\n## A\n### B ###\n## A\n") [ "a"; "a-1"; "b"; "a-2" ] "fences skipped, repeats numbered"
        }
        test "every relative link and image in README.md and docs/**/*.md names a file or folder of the repository" {
            let checkedCount = ref 0
            let broken =
                [ for page in pages () do
                    for target in links (File.ReadAllText page) do
                        if not (isExternal target) && not (target.StartsWith "#") then
                            checkedCount.Value <- checkedCount.Value + 1
                            let file, _ = resolve page target
                            let inside = file.StartsWith(Path.GetFullPath repoRoot + string Path.DirectorySeparatorChar)
                            if not inside || not (File.Exists file || Directory.Exists file) then
                                yield sprintf "%s: %s" (relative page) target ]
            Expect.isGreaterThan checkedCount.Value 50 "the pages link to the tree (the parser found their links)"
            Expect.isEmpty broken (sprintf "links to nothing:\n%s" (String.concat "\n" broken))
        }
        test "every #anchor (same page or page.md#anchor) in README.md and docs/**/*.md is a heading of that page" {
            let checkedCount = ref 0
            let broken =
                [ for page in pages () do
                    for target in links (File.ReadAllText page) do
                        if not (isExternal target) then
                            match resolve page target with
                            | file, Some anchor ->
                                checkedCount.Value <- checkedCount.Value + 1
                                let ok =
                                    file.EndsWith ".md" && File.Exists file && List.contains anchor (anchors (File.ReadAllText file))
                                if not ok then yield sprintf "%s: %s" (relative page) target
                            | _, None -> () ]
            Expect.isGreaterThan checkedCount.Value 5 "the pages link to headings (the parser found them)"
            Expect.isEmpty broken (sprintf "anchors that are no heading:\n%s" (String.concat "\n" broken))
        }
        test "every page under docs/ is reachable from README.md by links" {
            let reached = Collections.Generic.HashSet<string>()
            let rec visit (page: string) =
                if reached.Add page then
                    for target in links (File.ReadAllText page) do
                        if not (isExternal target) then
                            let file, _ = resolve page target
                            if file.EndsWith ".md" && File.Exists file then visit file
            visit readmePath
            let unreached = pages () |> List.filter (reached.Contains >> not) |> List.map relative
            Expect.isEmpty unreached (sprintf "pages no link leads to:\n%s" (String.concat "\n" unreached))
        }
        test "README.md stays a front door: under 350 lines" {
            let lines = File.ReadAllLines readmePath
            Expect.isLessThan lines.Length 350 "README.md lines (the rest belongs in docs/)"
        }
    ]
