// ChatTemplate(jinja:): the Jinja subset of ChatML chat templates (from tokenizer_config.json), then rendering a
// short conversation with and without the generation prompt.

@testable import PEFTKit

enum Target {
    static func setUp() throws {}

    static let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi {{ x }}"),
                           ChatMessage(role: "assistant", content: "Hello!"), ChatMessage(role: "user", content: "")]

    static func run(_ input: [UInt8]) {
        let text = String(decoding: input, as: UTF8.self)
        guard let t = try? ChatTemplate(jinja: text) else { return }
        _ = t.applyChatTemplate(messages, addGenerationPrompt: true)
        _ = t.applyChatTemplate([], addGenerationPrompt: false)
    }

    static func seeds() throws -> [String: [UInt8]] {
        func s(_ t: String) -> [UInt8] { Array(t.utf8) }
        return [
            "chatml": s("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
            "default-system": s("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
            "unclosed": s("<|im_start|><|im_end|>{% for m in messages %}{{ m['content'] "),
            "deep-parens": s("<|im_start|><|im_end|>{{" + String(repeating: "(", count: 3000) + "1" + String(repeating: ")", count: 3000) + "}}"),
            "not-chatml": s("{{ messages }}"),
        ]
    }
}
