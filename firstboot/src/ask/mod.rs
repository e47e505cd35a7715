//! Asking the owner: the console (banner, quiet screen, the lock between consoles, final and
//! failure screens), the questions and their hidden password input, the answers file (and what editors do
//! to it), and the validation both share, so a typed answer and a file's answer are judged the same way.

pub mod answers;
pub mod console;
pub mod editors;
pub mod hidden_input;
pub mod prompts;
pub mod validation;
