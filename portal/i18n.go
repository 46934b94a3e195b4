package portal

// The message catalog: every text of the pages, in English and Japanese,
// side by side so that neither can be forgotten. Keys are looked up by
// the templates' "t" and "tf" functions and by msg. Terms, used the same
// way on every page:
//
//	two-factor authentication   2段階認証
//	authenticator app           認証アプリ
//	6-digit code                6桁のコード
//	one-time code               バックアップコード (for a lost phone)
//	app passcode                アプリパスコード

// defaultLang is the language when the browser asks for none we have.
const defaultLang = "en"

// languages are the supported languages, by their Accept-Language tag.
var languages = []string{"en", "ja"}

// supported reports whether lang is one of languages.
func supported(lang string) bool { return lang == "en" || lang == "ja" }

// entry is one message in both languages. A %s or %d in it is filled by
// tf or fmt.Sprintf.
type entry struct{ key, en, ja string }

var messages = []entry{
	{"brand.sub", "Mail sign-in security", "メールのセキュリティ設定"},
	{"signout", "Sign out", "サインアウト"},
	{"done", "Done", "完了"},
	{"message.back", "Back to the start", "最初のページに戻る"},

	{"signin.title", "Sign in", "サインイン"},
	{"signin.intro",
		"Sign in with the user name and password of your mail account. If two-factor authentication is on, also enter the 6-digit code from your authenticator app, or one of your one-time codes.",
		"メールアカウントのユーザー名とパスワードでサインインしてください。2段階認証を有効にしている場合は、認証アプリに表示される6桁のコードか、バックアップコードのどれか1つも入力します。"},
	{"signin.user", "User name", "ユーザー名"},
	{"signin.password", "Password", "パスワード"},
	{"signin.code", "Code (only if two-factor authentication is on)", "確認コード（2段階認証を有効にしている場合のみ）"},
	{"signin.code_hint", "The 6-digit code from your authenticator app, or a one-time code.", "認証アプリに表示される6桁のコード、またはバックアップコードです。"},
	{"signin.button", "Sign in", "サインイン"},
	{"signin.passcode_note", "App passcodes do not work here: use the password of your account.", "ここではアプリパスコードは使えません。アカウントのパスワードを入力してください。"},
	{"signin.failed", "Sign-in failed. Check your user name, password and code, and try again.", "サインインできませんでした。ユーザー名、パスワード、確認コードを確かめて、もう一度お試しください。"},

	{"account.title", "Your account", "アカウント"},
	{"account.signed_in_as", "Signed in as", "サインイン中："},
	{"twofa.title", "Two-factor authentication", "2段階認証"},
	{"twofa.on", "On", "有効"},
	{"twofa.on_explain", "Mail apps sign in with app passcodes; your account password no longer works in them.", "メールアプリはアプリパスコードでサインインします。アカウントのパスワードはメールアプリでは使えなくなっています。"},
	{"twofa.codes_left", "One-time codes left: %d.", "残りのバックアップコード：%d 個"},
	{"twofa.no_totp", "Your administrator turned it on; no authenticator app is registered.", "管理者が有効にしたため、認証アプリは登録されていません。"},
	{"twofa.register", "Register an authenticator app", "認証アプリを登録する"},
	{"twofa.off", "Off", "無効"},
	{"twofa.off_explain",
		"Turning it on protects your mail: you register an authenticator app on your phone, then create an app passcode for each mail app.",
		"2段階認証を有効にすると、メールをより安全に守れます。スマートフォンに認証アプリを登録し、メールアプリごとにアプリパスコードを作成します。"},
	{"twofa.start", "Turn on two-factor authentication", "2段階認証を有効にする"},

	{"enroll.title", "Turn on two-factor authentication", "2段階認証を有効にする"},
	{"enroll.step_app", "Install an authenticator app on your phone: Google Authenticator, Microsoft Authenticator or Authy.", "スマートフォンに認証アプリ（Google Authenticator、Microsoft Authenticator、Authy のいずれか）をインストールします。"},
	{"enroll.step_scan", "In the app, add an account and scan this QR code.", "アプリでアカウントを追加し、このQRコードを読み取ります。"},
	{"enroll.qr_alt", "QR code for your authenticator app", "認証アプリ用のQRコード"},
	{"enroll.key_label", "If you cannot scan it, enter this key in the app instead:", "読み取れない場合は、代わりに次のキーをアプリに入力します。"},
	{"enroll.key_hint", "If the app asks, choose a time-based key. Spaces do not matter.", "種類を聞かれたら「時間ベース」を選んでください。スペースは入力しなくてもかまいません。"},
	{"enroll.code", "The 6-digit code the app shows now", "アプリに表示されている6桁のコード"},
	{"enroll.button", "Turn on", "有効にする"},
	{"enroll.cancel", "Cancel", "キャンセル"},
	{"enroll.wrong",
		"That code is not right. Enter the code the app shows now; if it keeps failing, check that the clock of your phone is set automatically.",
		"コードが正しくありません。アプリに今表示されているコードを入力してください。何度も失敗する場合は、スマートフォンの日付と時刻が自動設定になっているか確認してください。"},
	{"enroll.already",
		"Two-factor authentication is already on with an authenticator app. To register a new phone, add it under Authenticator apps.",
		"2段階認証はすでに認証アプリで有効になっています。新しいスマートフォンは「認証アプリ」の欄から追加してください。"},

	{"codes.title", "Two-factor authentication is on", "2段階認証を有効にしました"},
	{"codes.intro",
		"These are your one-time codes. If you lose your phone, sign in here with one of them instead of a 6-digit code. Each code works only once.",
		"次の10個はバックアップコードです。スマートフォンをなくしたときは、6桁のコードの代わりにこのどれかでサインインできます。各コードは1回しか使えません。"},
	{"codes.rule",
		"Write them down or print them now, and keep them away from your phone: they are shown only this once.",
		"今すぐ書き留めるか印刷して、スマートフォンとは別の場所に保管してください。このコードが表示されるのは今回だけです。"},
	{"codes.next",
		"Next, create an app passcode for each mail app (Thunderbird, the mail app of your phone …): from now on, mail apps sign in with an app passcode instead of your password.",
		"次に、メールアプリ（Thunderbird やスマートフォンのメールアプリなど）ごとにアプリパスコードを作成してください。これからは、メールアプリはパスワードの代わりにアプリパスコードでサインインします。"},

	{"passcodes.title", "App passcodes", "アプリパスコード"},
	{"passcodes.explain",
		"Each mail app gets a passcode of its own, named after the app. Delete a passcode when you stop using the app or lose the device: the app is signed out at once.",
		"メールアプリごとに、アプリの名前を付けたパスコードを1つずつ作ります。アプリを使わなくなったときや端末をなくしたときは、そのパスコードを削除してください。アプリはすぐにサインアウトされます。"},
	{"passcodes.last_use_unavailable", "The last use cannot be shown right now.", "最終使用の情報は、現在表示できません。"},
	{"passcodes.col_app", "Name", "名前"},
	{"passcodes.col_created", "Created", "作成日時"},
	{"passcodes.col_scope", "Works for", "利用範囲"},
	{"passcodes.col_last", "Last used", "最終使用"},
	{"passcodes.delete", "Delete", "削除"},
	{"passcodes.delete_named", "Delete %s", "%s を削除"},
	{"passcodes.never", "Never", "未使用"},
	{"passcodes.none", "No app passcodes yet.", "アプリパスコードはまだありません。"},
	{"passcodes.add_title", "Add an app passcode", "アプリパスコードを追加"},
	{"passcodes.name", "Name of the app", "アプリの名前"},
	{"passcodes.name_hint", "For example Thunderbird, iPhone or Cybozu.", "例：Thunderbird、iPhone、サイボウズ"},
	{"passcodes.scope", "Only for (optional)", "利用範囲を限定する（任意）"},
	{"passcodes.scope_hint", "Tick none to let it work for everything. IMAP and POP3 receive mail, SMTP sends it.", "何も選ばなければ、すべてで使えます。IMAP と POP3 はメールの受信、SMTP は送信です。"},
	{"passcodes.add", "Create passcode", "パスコードを作成"},
	{"passcodes.scope_all", "All", "すべて"},
	{"passcodes.bad_scope", "Choose IMAP, POP3 or SMTP.", "IMAP、POP3、SMTP から選んでください。"},
	{"passcodes.bad_name", "Enter a name of up to 64 characters.", "名前は64文字以内で入力してください。"},
	{"passcodes.need_2fa", "Turn on two-factor authentication first.", "先に2段階認証を有効にしてください。"},
	{"passcodes.too_many", "You have too many app passcodes. Delete the ones you no longer use first.", "アプリパスコードが多すぎます。使っていないものを先に削除してください。"},
	{"passcodes.exists", "There is already a passcode named %s. Choose another name, or delete that one first.", "「%s」という名前のパスコードはすでにあります。別の名前にするか、先にそのパスコードを削除してください。"},
	{"passcodes.add_failed", "The passcode could not be created. Please try again later.", "パスコードを作成できませんでした。しばらくしてから、もう一度お試しください。"},
	{"passcodes.not_found", "That passcode no longer exists.", "そのパスコードはすでに削除されています。"},
	{"passcodes.deleted", "The passcode %s was deleted; the apps that used it are signed out.", "パスコード「%s」を削除しました。このパスコードを使っていたアプリはサインアウトされます。"},

	{"passcode.title", "New app passcode", "新しいアプリパスコード"},
	{"passcode.heading", "App passcode for %s", "%s 用のアプリパスコード"},
	{"passcode.how",
		"Enter it in the app as the password, with your usual user name. Spaces and upper or lower case do not matter.",
		"アプリのパスワード欄に、このパスコードを入力してください。ユーザー名はいつもと同じです。スペースや大文字・小文字の違いは区別されません。"},
	{"passcode.rule",
		"Check that the app works before pressing Done: the passcode cannot be shown again.",
		"「完了」を押す前に、アプリでメールが使えることを確認してください。このパスコードは二度と表示できません。"},

	{"settings.title", "Mail app settings", "メールアプリの設定"},
	{"settings.intro", "Use these settings in Thunderbird, Outlook or the mail app of your phone.", "Thunderbird、Outlook、スマートフォンのメールアプリには、次のように設定してください。"},
	{"settings.server", "Server", "サーバー"},
	{"settings.user", "User name", "ユーザー名"},
	{"settings.user_note", "(unchanged)", "（これまでと同じ）"},
	{"settings.password", "Password", "パスワード"},
	{"settings.password_note",
		"With two-factor authentication on: an app passcode made for that app, not your account password. With it off: your account password.",
		"2段階認証が有効なら、アカウントのパスワードではなく、そのアプリ用に作成したアプリパスコードです。無効なら、アカウントのパスワードです。"},
	{"settings.auth", "Authentication", "認証方式"},
	{"settings.auth_note", "Normal password", "通常のパスワード認証"},
	{"settings.protocol", "Protocol", "プロトコル"},
	{"settings.port", "Port", "ポート"},
	{"settings.security", "Connection security", "接続の保護"},
	{"settings.security_none", "None", "なし"},
	{"settings.off_note", "Without two-factor authentication, mail apps work only on the campus network.", "2段階認証を有効にしていない場合、メールアプリは学内ネットワークからしか使えません。"},

	{"off.title", "Turn off two-factor authentication", "2段階認証を無効にする"},
	{"off.explain",
		"This also deletes all your app passcodes and your authenticator apps, and signs out the apps that use them. To change phones, add the new one above instead, then remove the old one.",
		"無効にすると、アプリパスコードと認証アプリもすべて削除され、それを使っているアプリはサインアウトされます。スマートフォンを買い替えたときは、無効にせずに、上で新しい端末を追加してから古い端末を削除してください。"},
	{"off.code", "A current 6-digit code, or a one-time code", "現在の6桁のコード、またはバックアップコード"},
	{"off.button", "Turn off", "無効にする"},
	{"off.wrong", "That code is not right. Two-factor authentication is still on.", "コードが正しくありません。2段階認証は有効のままです。"},
	{"off.done", "Two-factor authentication is off, and your app passcodes are deleted.", "2段階認証を無効にし、アプリパスコードをすべて削除しました。"},
	{"off.admin", "Your administrator manages two-factor authentication for this account: ask them to turn it off.", "このアカウントの2段階認証は管理者が管理しています。無効にするには管理者に依頼してください。"},
	{"reload.failed", "Your change was saved but is not in effect yet. If this goes on, tell your administrator.", "変更は保存されましたが、まだ反映されていません。この状態が続く場合は、管理者に連絡してください。"},

	{"notfound.title", "Page not found", "ページが見つかりません"},
	{"notfound.text", "There is no such page.", "このページは存在しません。"},
	{"forbidden.title", "The form has expired", "フォームの有効期限が切れました"},
	{"forbidden.text",
		"For your security, the form could not be sent: the session has expired or the page is out of date. Go back to the start and try again.",
		"セッションの有効期限が切れたか、ページが古くなっているため、安全のためフォームを送信できませんでした。最初のページに戻って、もう一度操作してください。"},
	{"unavailable.title", "Temporarily unavailable", "一時的に利用できません"},
	{"unavailable.text", "Your account cannot be checked right now. Please try again in a few minutes.", "現在アカウントを確認できません。数分後にもう一度お試しください。"},
	{"badrequest.title", "Bad request", "不正なリクエスト"},
	{"badrequest.text", "The form could not be read. Go back to the start and try again.", "フォームを読み取れませんでした。最初のページに戻って、もう一度操作してください。"},
}

// catalogs maps a language to its messages by key; built once from
// messages and never changed.
var catalogs = buildCatalogs()

func buildCatalogs() map[string]map[string]string {
	en, ja := map[string]string{}, map[string]string{}
	for _, set := range [][]entry{messages, deviceMessages} {
		for _, e := range set {
			en[e.key], ja[e.key] = e.en, e.ja
		}
	}
	return map[string]map[string]string{"en": en, "ja": ja}
}

// msg returns the message key in lang; an unknown key is returned as is
// (TestCatalog makes sure every key used exists).
func msg(lang, key string) string {
	if m, ok := catalogs[lang][key]; ok {
		return m
	}
	return key
}
