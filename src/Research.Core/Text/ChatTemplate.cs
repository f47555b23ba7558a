using System.Text;
using System.Text.Json;
using Research.Abstractions;

namespace Research.Core.Text;

/// <summary>One turn of a conversation: <c>system</c>, <c>user</c> or <c>assistant</c>, and its text.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// How a conversation (a <c>messages</c> list of <c>{"role", "content"}</c>, the layout of Hugging Face's chat datasets)
/// becomes text: each message is the template with <c>{role}</c> replaced by its role and <c>{content}</c> by its text,
/// the messages in order between two end-of-text ids. The default <c>&lt;|{role}|&gt;\n{content}\n</c> is Zephyr's
/// (TRL's) role-marker format without its per-turn end token: our end of turn is the template's text after
/// <c>{content}</c>. Jinja templates (tokenizer_config.json's <c>chat_template</c>) are not read: one format string is
/// what a study of forgetting needs to state its input exactly.
/// </summary>
public sealed class ChatTemplate
{
    /// <summary>The roles a message may have.</summary>
    public static readonly IReadOnlyList<string> Roles = ["system", "user", "assistant"];

    /// <summary>The default template.</summary>
    public const string Default = "<|{role}|>\n{content}\n";

    readonly string before, after;

    /// <param name="template">Holds <c>{content}</c> exactly once; <c>{role}</c> anywhere (before or after the content).</param>
    public ChatTemplate(string template)
    {
        if (Error(template) is { } error) throw new ArgumentException(error, nameof(template));
        var at = template.IndexOf("{content}", StringComparison.Ordinal);
        before = template[..at];
        after = template[(at + "{content}".Length)..];
    }

    /// <summary>Why a template cannot be used, or null.</summary>
    public static string? Error(string template)
    {
        var first = template.IndexOf("{content}", StringComparison.Ordinal);
        if (first < 0) return "holds no {content}";
        if (template.IndexOf("{content}", first + 1, StringComparison.Ordinal) >= 0) return "holds {content} more than once";
        return null;
    }

    /// <summary>A message as three texts: the marker before its content (never counts toward the loss), its content, and
    /// the end of turn after it (both count for an assistant's turn).</summary>
    public (string Before, string Content, string After) Render(ChatMessage m) =>
        (before.Replace("{role}", m.Role, StringComparison.Ordinal), m.Content, after.Replace("{role}", m.Role, StringComparison.Ordinal));

    /// <summary>
    /// The messages of one record: <paramref name="json"/> must be a JSON array of objects, each with a <c>role</c> (one of
    /// <see cref="Roles"/>) and a <c>content</c> string, at least one of them an assistant's (else nothing would count
    /// toward the loss). Every refusal is one line beginning with <paramref name="where"/> ("FILE, line N").
    /// </summary>
    public static IReadOnlyList<ChatMessage> Parse(string json, string column, string where)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new InvalidDataException($"{where}: field \"{column}\" is not JSON ({e.Message.Split('\n', 2)[0].TrimEnd()})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{where}: field \"{column}\" is not a list of messages (a JSON array of {{\"role\", \"content\"}} objects)");
            var messages = new List<ChatMessage>();
            foreach (var m in doc.RootElement.EnumerateArray())
            {
                var n = messages.Count + 1;
                if (m.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{where}: message {n} of \"{column}\" is not an object with \"role\" and \"content\"");
                if (!m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{where}: message {n} of \"{column}\" has no role (a string: {string.Join(", ", Roles)})");
                var r = role.GetString()!;
                if (!Roles.Contains(r))
                    throw new InvalidDataException($"{where}: message {n} of \"{column}\" has the unknown role \"{r}\" (roles: {string.Join(", ", Roles)})");
                if (!m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{where}: message {n} of \"{column}\" has no content (a string)");
                messages.Add(new ChatMessage(r, content.GetString()!));
            }
            if (!messages.Any(m => m.Role == "assistant"))
                throw new InvalidDataException($"{where}: field \"{column}\" has no assistant turn, so no token would count toward the loss");
            return messages;
        }
    }

    /// <summary>
    /// A conversation as the pieces of one row: <c>[EOT]</c>, then per message its marker (never counted), its content and
    /// end of turn (counted on an assistant's turn), then <c>[EOT]</c>, counted when the last turn is an assistant's (it
    /// learns to stop, as the closing end-of-text of a prompt/response pair does). Each piece is tokenized on its own, so
    /// the counted spans begin and end on token boundaries.
    /// </summary>
    public InstructionSequence Sequence(IReadOnlyList<ChatMessage> messages, ITextTokenizer tokenizer, string where)
    {
        var pieces = new List<InstructionPiece> { new([tokenizer.EndOfTextId], false, 0) };
        foreach (var m in messages)
        {
            var (b, c, a) = Render(m);
            var counts = m.Role == "assistant";
            pieces.Add(new(tokenizer.Encode(b), false, 0));
            pieces.Add(new(tokenizer.Encode(c), counts, counts ? Encoding.UTF8.GetByteCount(c) : 0));
            pieces.Add(new(tokenizer.Encode(a), counts, counts ? Encoding.UTF8.GetByteCount(a) : 0));
        }
        var last = messages[^1].Role == "assistant";
        pieces.Add(new([tokenizer.EndOfTextId], last, last ? 1 : 0));
        return new InstructionSequence(pieces, where);
    }

    /// <summary>The conversation as the text the tokenizer is fitted to (<c>gpt2-8192</c>).</summary>
    public string Text(IReadOnlyList<ChatMessage> messages) =>
        string.Concat(messages.Select(m => Render(m) is var (b, c, a) ? b + c + a : ""));
}
